"""Barrier and lock latency, as ratios to a raw C 4 KiB request/reply
ping-pong between ranks 0 and 1 measured in the same run.

    ./dsmexec.py MACHINES bench/sync_latency.py      (2 or more ranks)

  barrier               every rank, back to back
  lock, uncontended     rank 1 takes and gives back a lock homed on rank 0
                        while the others wait
  lock, contended       every rank takes and gives back the same lock
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402

clock = time.perf_counter_ns


def loop(n, fn):
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def acquire_release(lock):
    lock.acquire()
    lock.release()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5000)
    a = ap.parse_args()
    dsm = libdsm.init()
    if dsm.size < 2:
        raise SystemExit("run with 2 or more ranks")
    pp = reference.pingpong(dsm, 20000)
    rows = {}
    dsm.barrier()
    rows["barrier (%d ranks)" % dsm.size] = loop(a.iters, dsm.barrier)
    lock0 = dsm.lock(dsm.size * 3)          # homed on rank 0
    dsm.barrier()
    if dsm.rank == 1:
        name = "lock, uncontended (%d ranks)" % dsm.size
        rows[name] = loop(a.iters, lambda: acquire_release(lock0))
    dsm.barrier()
    shared = dsm.lock(dsm.size * 5)
    t = loop(a.iters // 5, lambda: acquire_release(shared))
    rows["lock, contended (%d ranks)" % dsm.size] = t
    dsm.barrier()
    results = dsm.bcast(rows if dsm.rank == 1 else None, root=1)
    if dsm.rank == 1:
        ref = reference.summary(pp)
        print("reference: raw C 16 B / 4 KiB blocking ping-pong  median %.1f us  p99 %.1f us" % ref)
        print("%-28s %10s %10s %8s" % ("operation", "median us", "p99 us", "ratio"))
        for name, ts in results.items():
            med, p99 = reference.summary(ts)
            print("%-28s %10.1f %10.1f %7.2fx" % (name, med, p99, med / ref[0]))
            reference.emit(row=name, median_us=med, p99_us=p99, ref_us=ref[0])
    dsm.finalize()


if __name__ == "__main__":
    main()
