"""Sequential read of 256 MiB that another rank owns, as a fraction of the
loopback TCP bandwidth between the same two processes in the same run: the
faster of a blocking and a busy-polling reader (reference.MODES).

    ./dsmexec.py machine_file.example bench/stream.py [--mib 256]

Rank 0 writes the array (so it owns every page); rank 1 copies it into
private memory that is already faulted in: once faulting page after page
with read-ahead, once after dsm.prefetch.  Each also gives the CPU the comm
threads of the owner (rank 0) and of the reader (rank 1) spent, per page.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference                   # noqa: E402


def read_all(dsm, arr, how):
    """Rank 1 copies arr into private memory, faulting or after prefetch:
    its MB/s on rank 1, None elsewhere."""
    if dsm.rank != 1:
        return None
    local = np.ones_like(arr)          # faulted in before the clock starts, as TCP's buffer
    reference.warm_memory(2 * arr.nbytes)
    t = time.perf_counter()
    if how == "prefetch":
        dsm.prefetch(arr)
    np.copyto(local, arr)
    bw = arr.nbytes / (time.perf_counter() - t) / 1e6
    assert (local == 7).all()
    return bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    a = ap.parse_args()
    nbytes = a.mib << 20
    dsm, comm = reference.init_counting(size=2 * nbytes + (64 << 20))
    tcp = reference.tcp_bandwidths(dsm, nbytes)
    pages = nbytes // dsm.page_size
    results = {}
    for how in ("faults", "prefetch"):
        arr = dsm.array(nbytes // 8, "int64")
        if dsm.rank == 0:
            arr[:] = 7
        results[how] = reference.comm_cpu(dsm, comm, lambda: read_all(dsm, arr, how))
    if dsm.rank == 1:
        ref = reference.faster_stream(tcp)
        for mode, bw in tcp.items():
            print("loopback TCP, raw C, %-12s reader: %.0f MB/s" % (mode, bw))
        print("the faster, %s, is the reference" % ref["mode"])
        reference.emit(row="tcp stream", **ref)
        for how, (bw, cpu) in results.items():
            name = "sequential read %d MiB (%s)" % (a.mib, how)
            owner, reader = (c / pages / 1000.0 for c in cpu)
            print("%-40s %8.0f MB/s  %5.1f%% of TCP  comm CPU/page %.2f / %.2f us"
                  % (name, bw, 100 * bw / ref["mb_s"], owner, reader))
            reference.emit(row=name, mb_s=bw, ref_mb_s=ref["mb_s"],
                           owner_cpu_us=owner, requester_cpu_us=reader)
    dsm.finalize()


if __name__ == "__main__":
    main()
