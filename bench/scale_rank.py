"""One job of the scaling benchmark (bench/scale.py) at N ranks: message
counts always, timings unless --count-only.

    ./dsmexec.py MACHINES bench/scale_rank.py [--count-only]     (N >= 2)

Counts (they do not depend on cores, so oversubscribed runs are fine):
every rank reads dsm.stats() around K barriers, K allreduces of 8 doubles,
K contended lock rounds (every rank takes and gives back one lock homed on
rank 0) and F read faults (rank 1 reads pages rank 0 homes and owns).
Each window lies between two barriers whose messages, known from the
plan, are taken off; the sums of msgs_sent over the ranks are exact (a
message may be received in the window next to its own, not sent).

Timings (rank 1's, like bench/sync_latency.py): the raw C 4 KiB ping-pong
between ranks 0 and 1 first (the reference of the lock and fault rows),
then barrier, allreduce of 8 doubles, contended lock acquire+release and a
cold read fault of a page rank 0 owns, each back to back.

Rank 0 prints one BENCH line per row.
"""
import argparse
import os
import sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fault_latency               # noqa: E402
import libdsm                      # noqa: E402
import reference                   # noqa: E402
from sync_latency import acquire_release, loop     # noqa: E402


def plan(n):
    """(P, log2 P, messages every rank sends in one recursive-doubling
    collective, critical-path hops): the pattern of libdsm/csrc/coll.h."""
    p, log = 1, 0
    while p * 2 <= n:
        p, log = p * 2, log + 1
    sends = [1 if r >= p else log + (r + p < n) for r in range(n)]
    return p, log, sends, log + (2 if n != p else 0)


class Counter:
    """msgs_sent, msgs_recv and faults of this rank over windows that each
    start and end with a barrier, whose own messages are taken off.  The
    first barrier comes after the first reading: otherwise a rank's comm
    thread could serve another rank's first requests before its
    application thread has read the counters."""

    def __init__(self, dsm):
        self.dsm = dsm
        self.barrier_sent = plan(dsm.size)[2][dsm.rank]
        self.windows = {}

    def window(self, name, run):
        dsm = self.dsm
        before = dsm.stats()
        dsm.barrier()
        run()
        dsm.barrier()
        after = dsm.stats()
        d = {k: after[k] - before[k] for k in ("msgs_sent", "msgs_recv", "read_faults")}
        d["msgs_sent"] -= 2 * self.barrier_sent
        d["msgs_recv"] -= 2 * self.barrier_sent  # a barrier receives what it sends
        self.windows[name] = d


def repeat(n, fn):
    def run():
        for _ in range(n):
            fn()
    return run


def homed_on_0(dsm, count, skip=0):
    """count pages that rank 0 homes, from the top of the region down (the
    heap and the arrays start at the bottom)."""
    pages = [p for p in range(dsm.nbytes // dsm.page_size - 1, 0, -1)
             if dsm.page_home(p) == 0]
    if len(pages) < skip + count:
        raise SystemExit("region too small for %d pages homed on rank 0" % (skip + count))
    return pages[skip:skip + count]


def count(dsm, k, lock_rounds, faults):
    """{operation: {ops, msgs_sent, msgs_recv}} summed over the ranks (rank
    0), None elsewhere."""
    c = Counter(dsm)
    x = np.ones(8)
    c.window("barrier", repeat(k, dsm.barrier))
    c.window("allreduce", repeat(k, lambda: dsm.allreduce(x, op="sum")))
    lock = dsm.lock(dsm.size * 5)                       # homed on rank 0
    c.window("lock", repeat(lock_rounds, lambda: acquire_release(lock)))
    pages = homed_on_0(dsm, faults)

    def read_faults():
        if dsm.rank == 1:
            for p in pages:
                dsm.mem[p * dsm.page_size]
    c.window("read fault", read_faults)
    every = dsm.gather(c.windows, root=0)
    if dsm.rank != 0:
        return None
    ops = {"barrier": k, "allreduce": k, "lock": lock_rounds * dsm.size, "read fault": faults}
    out = {}
    for name, n_ops in ops.items():
        out[name] = {"ops": n_ops,
                     "per_rank": [w[name]["msgs_sent"] for w in every],
                     "msgs_sent": sum(w[name]["msgs_sent"] for w in every),
                     "msgs_recv": sum(w[name]["msgs_recv"] for w in every),
                     "read_faults": sum(w[name]["read_faults"] for w in every)}
    return out


def timings(dsm, iters, faults):
    """{row: nanoseconds on rank 1} on rank 1, None elsewhere."""
    pp = reference.pingpong(dsm, 20000)
    x = np.ones(8)
    rows = {"ping-pong": pp}
    dsm.barrier()
    rows["barrier"] = loop(iters, dsm.barrier)
    dsm.barrier()
    rows["allreduce"] = loop(iters, lambda: dsm.allreduce(x, op="sum"))
    got = dsm.allreduce(x, op="sum")
    if not np.array_equal(got, np.full(8, float(dsm.size))):
        raise SystemExit("allreduce gave %r, not %d everywhere" % (got, dsm.size))
    lock = dsm.lock(dsm.size * 7)                       # homed on rank 0
    dsm.barrier()
    rows["lock"] = loop(max(1, iters // 5), lambda: acquire_release(lock))
    dsm.barrier()
    if dsm.rank == 1:
        overhead = fault_latency.clock_overhead()
        pages = homed_on_0(dsm, faults, skip=faults)     # not the counted ones
        t = fault_latency.timed(dsm, pages, fault_latency.read)
        rows["read fault"] = [max(0, v - overhead) for v in t]
    dsm.barrier()
    return rows if dsm.rank == 1 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count-only", action="store_true",
                    help="only the message counts (for N above the cores)")
    ap.add_argument("--iters", type=int, default=5000)
    ap.add_argument("--k", type=int, default=200, help="collectives counted")
    ap.add_argument("--lock-rounds", type=int, default=20, help="per rank, counted")
    ap.add_argument("--faults", type=int, default=200)
    a = ap.parse_args()
    dsm = libdsm.init(size=64 << 20, block_pages=1, readahead=1)
    if dsm.size < 2:
        raise SystemExit("run with 2 or more ranks")
    counts = count(dsm, a.k, a.lock_rounds, a.faults)
    rows = None if a.count_only else timings(dsm, a.iters, a.faults)
    rows = dsm.bcast(rows, root=1)
    if dsm.rank == 0:
        n = dsm.size
        for name, c in counts.items():
            print("%d ranks %-10s %6.2f msgs sent per op per rank, %6.2f per op in all"
                  % (n, name, c["msgs_sent"] / c["ops"] / n, c["msgs_sent"] / c["ops"]))
            reference.emit(row="count %s %d" % (name, n), **c)
        for name, ts in (rows or {}).items():
            med, p99 = reference.summary(ts)
            print("%d ranks %-10s median %8.1f us  p99 %8.1f us" % (n, name, med, p99))
            reference.emit(row="dsm %s %d" % (name, n), median_us=med, p99_us=p99)
    dsm.finalize()


if __name__ == "__main__":
    main()
