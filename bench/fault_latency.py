"""Remote fault latency between 2 ranks, as ratios to a raw C 4 KiB
request/reply ping-pong between the same two processes in the same run.

    ./dsmexec.py machine_file.example bench/fault_latency.py [--pages N]

Rank 1 touches pages whose home and owner is rank 0, one access each:
  read fault          cold read: DSM_REQ -> DSM_PAGE (4 KiB) -> DSM_UPDATE
  write fault         cold write: the same, taking ownership
  upgrade write       write to a page rank 1 already reads: rank 0's copy
                      is invalidated, no data moves
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402

clock = time.perf_counter_ns


def timed(dsm, pages, op):
    out = []
    mem, ps = dsm.mem, dsm.page_size
    for p in pages:
        off = p * ps
        t = clock()
        op(mem, off)
        out.append(clock() - t)
    return out


def read(mem, off):
    mem[off]


def write(mem, off):
    mem[off] = 1


def clock_overhead(n=10000):
    t = [0] * n
    for i in range(n):
        a = clock()
        t[i] = clock() - a
    return sorted(t)[n // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--pingpongs", type=int, default=20000)
    a = ap.parse_args()
    dsm = libdsm.init(size=(64 << 20), block_pages=1, readahead=1)
    if dsm.size != 2:
        raise SystemExit("run with exactly 2 ranks")
    npages = dsm.nbytes // dsm.page_size
    homed0 = [p for p in range(1, npages) if dsm.page_home(p) == 0]
    need = 3 * a.pages
    if len(homed0) < need:
        raise SystemExit("region too small for %d pages" % a.pages)
    rd, wr, up = homed0[:a.pages], homed0[a.pages:2 * a.pages], homed0[2 * a.pages:need]
    pp = reference.pingpong(dsm, a.pingpongs)
    rows = {}
    if dsm.rank == 1:
        overhead = clock_overhead()
        rows["read fault"] = timed(dsm, rd, read)
        rows["write fault"] = timed(dsm, wr, write)
        timed(dsm, up, read)
        rows["upgrade write"] = timed(dsm, up, write)
        ref = reference.summary(pp)
        print("reference: raw C 16 B / 4 KiB ping-pong  median %.1f us  p99 %.1f us"
              % ref)
        print("%-14s %10s %10s %8s" % ("fault", "median us", "p99 us", "ratio"))
        reference.emit(row="ping-pong", median_us=ref[0], p99_us=ref[1])
        for name, t in rows.items():
            med, p99 = reference.summary([max(0, x - overhead) for x in t])
            print("%-14s %10.1f %10.1f %7.2fx" % (name, med, p99, med / ref[0]))
            reference.emit(row=name, median_us=med, p99_us=p99, ref_us=ref[0])
    dsm.barrier()
    dsm.finalize()


if __name__ == "__main__":
    main()
