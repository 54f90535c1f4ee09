"""Remote fault latency between 2 ranks, as ratios to a raw C 4 KiB
request/reply ping-pong between the same two processes in the same run: the
faster of a blocking and a busy-polling one (reference.MODES).

    ./dsmexec.py machine_file.example bench/fault_latency.py [--pages N]

Rank 1 touches pages whose home and owner is rank 0, one access each:
  read fault          cold read: DSM_REQ -> DSM_PAGE (4 KiB) -> DSM_UPDATE
  write fault         cold write: the same, taking ownership
  upgrade write       write to a page rank 1 already reads: rank 0's copy
                      is invalidated, no data moves
Each also gives the CPU the comm threads of the owner (rank 0) and of the
faulting rank (1) spent on it, per page.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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


def phase(dsm, comm, pages, op):
    """op on each of pages on rank 1, timed, while rank 0 waits: (the times
    less the clock's overhead, comm threads' CPU µs per page [owner,
    faulting rank]) on rank 1, None elsewhere."""
    def run():
        if dsm.rank == 1:
            overhead = clock_overhead()
            return [max(0, x - overhead) for x in timed(dsm, pages, op)]
    times, cpu = reference.comm_cpu(dsm, comm, run)
    return times and (times, [c / len(pages) / 1000.0 for c in cpu])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--pingpongs", type=int, default=20000)
    a = ap.parse_args()
    dsm, comm = reference.init_counting(size=(64 << 20), block_pages=1, readahead=1)
    if dsm.size != 2:
        raise SystemExit("run with exactly 2 ranks")
    npages = dsm.nbytes // dsm.page_size
    homed0 = [p for p in range(1, npages) if dsm.page_home(p) == 0]
    need = 3 * a.pages
    if len(homed0) < need:
        raise SystemExit("region too small for %d pages" % a.pages)
    rd, wr, up = homed0[:a.pages], homed0[a.pages:2 * a.pages], homed0[2 * a.pages:need]
    pp = reference.pingpongs(dsm, a.pingpongs)
    rows = {"read fault": phase(dsm, comm, rd, read),
            "write fault": phase(dsm, comm, wr, write)}
    phase(dsm, comm, up, read)
    rows["upgrade write"] = phase(dsm, comm, up, write)
    if dsm.rank == 1:
        ref = reference.faster_pingpong(pp)
        for mode, x in ref["modes"].items():
            print("reference: raw C 16 B / 4 KiB ping-pong, %-12s median %.1f us  p99 %.1f us"
                  % (mode, x["median_us"], x["p99_us"]))
        print("the faster, %s, is the reference" % ref["mode"])
        print("%-14s %10s %10s %8s %22s" % ("fault", "median us", "p99 us", "ratio",
                                             "comm CPU/page us 0 / 1"))
        reference.emit(row="ping-pong", **ref)
        for name, (t, cpu) in rows.items():
            med, p99 = reference.summary(t)
            print("%-14s %10.1f %10.1f %7.2fx %11.1f / %.1f"
                  % (name, med, p99, med / ref["median_us"], cpu[0], cpu[1]))
            reference.emit(row=name, median_us=med, p99_us=p99, ref_us=ref["median_us"],
                           owner_cpu_us=cpu[0], requester_cpu_us=cpu[1])
    dsm.barrier()
    dsm.finalize()


if __name__ == "__main__":
    main()
