"""Collectives and locks of 2 ranks on one host: host-shared memory
(DSM_SHARE=host: the host's control area, no message) against per-rank mode
(DSM_SHARE=rank: the ranks' TCP connections), in the same run; then the
same job as 2 virtual hosts of 2 ranks (DSM_VHOSTS=2), where host-shared
memory runs the barrier and the collectives in two levels (each host's
control area, then its leader over the connections) and per-rank mode
routes through the leaders.

    .venv/bin/python bench/hostcoll.py [--ranks 2] [--iters 5000]
                    runs both modes under dsmexec, on one host (--ranks)
                    and on 2 virtual hosts x 2 ranks, and prints each
                    call's medians and the ratio per-rank / host-shared
    ./dsmexec.py -n 2 bench/hostcoll.py --one
                    one mode (DSM_SHARE's): rank 0 prints a BENCH line

  barrier        back to back
  bcast          root 0's small int (pickled: a few bytes)
  allreduce      one float64, op sum
  allreduce 1k   1024 float64, op sum
  allreduce 4k, 1M
                 4096 and 1048576 float64 (32 KiB and 8 MiB a rank), op
                 sum, the second a hundredth of the iterations; on 2
                 virtual hosts x 2 ranks only, where both are above the
                 size (64 KiB of the 4 ranks' contributions: coll.h's
                 COLL_HOST_GATHER) above which a reduce runs among all the
                 ranks instead of gathered by the leaders, and 1k below
  lock pair      rank 0 takes and gives back lock 0 while the others wait
                 (one host only: across hosts locks go over the connections
                 in both modes)
  condition round trip
                 ranks 0 and 1 take turns through a Condition, each holding
                 its lock but while it waits: a turn is a notify and a wait
                 the other's notify ends, and rank 0 times a turn of each
                 (one host only, as the lock pair)
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference                   # noqa: E402
from sync_latency import acquire_release, loop     # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# across hosts, the large allreduces: (float64 elements, 1 / the share of iterations)
LARGE = {"allreduce 4k": (4096, 1), "allreduce 1M": (1 << 20, 100)}
DSMEXEC = os.path.join(os.path.dirname(HERE), "dsmexec.py")


def turn(cond, passes, rank):
    """Wait for rank's turn (holding cond), then pass it to the other rank."""
    while passes[0] % 2 != rank:
        cond.wait()
    passes[0] += 1
    cond.notify()


def one(iters):
    import libdsm
    import numpy as np
    dsm = libdsm.init(size="64M")
    small, block = np.float64(dsm.rank + 0.5), np.ones(1024)
    calls = {"barrier": dsm.barrier,
             "bcast": lambda: dsm.bcast(7 if dsm.rank == 0 else None, root=0),
             "allreduce": lambda: dsm.allreduce(small, "sum"),
             "allreduce 1k": lambda: dsm.allreduce(block, "sum")}
    if os.environ.get("DSM_VHOSTS", "1") != "1":
        for name, (n, _) in LARGE.items():
            calls[name] = (lambda a: lambda: dsm.allreduce(a, "sum"))(np.full(n, dsm.rank + 0.25))
    out = {}
    for name, call in calls.items():
        n = max(iters // LARGE.get(name, (0, 1))[1], 10)
        loop(n // 10 + 1, call)
        out[name] = reference.summary(loop(n, call))[0]
    lock = dsm.lock(0)
    dsm.barrier()
    if dsm.rank == 0 and os.environ.get("DSM_VHOSTS", "1") == "1":
        loop(iters // 10, lambda: acquire_release(lock))
        out["lock pair"] = reference.summary(loop(iters, lambda: acquire_release(lock)))[0]
    dsm.barrier()
    cond, passes = dsm.condition("bench"), dsm.array(1, "int64")
    dsm.barrier()
    if dsm.rank < 2 and os.environ.get("DSM_VHOSTS", "1") == "1":
        with cond:
            loop(iters // 50, lambda: turn(cond, passes, dsm.rank))
            times = loop(iters // 5, lambda: turn(cond, passes, dsm.rank))
        out["condition round trip"] = reference.summary(times)[0]
    dsm.barrier()
    if dsm.rank == 0:
        reference.emit(share=os.environ.get("DSM_SHARE", "rank"), **out)
    dsm.finalize()


def both(ranks, iters, vhosts):
    """The job in both modes, one after the other, on `vhosts` virtual hosts."""
    got = {}
    for share in ("rank", "host"):
        env = dict(os.environ, DSM_SHARE=share, DSM_VHOSTS=str(vhosts))
        p = subprocess.run([sys.executable, DSMEXEC, "-n", str(ranks), __file__, "--one",
                            "--iters", str(iters)], env=env,
                           capture_output=True, text=True, check=True)
        line = [x for x in p.stdout.splitlines() if "BENCH " in x][-1]
        got[share] = json.loads(line.split("BENCH ", 1)[1])
    where = "one host" if vhosts == 1 else "%d virtual hosts" % vhosts
    print("%d ranks on %s, medians in us   per-rank   host-shared   ratio" % (ranks, where))
    for name in ("barrier", "bcast", "allreduce", "allreduce 1k") + \
            (("lock pair", "condition round trip") if vhosts == 1 else tuple(LARGE)):
        r, h = got["rank"][name], got["host"][name]
        print("%-34s %10.2f %12.2f %8.1fx" % (name, r, h, r / h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", action="store_true")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5000)
    a = ap.parse_args()
    if a.one:
        one(a.iters)
    else:
        both(a.ranks, a.iters, 1)
        both(4, a.iters, 2)


if __name__ == "__main__":
    main()
