"""Sequential read of 256 MiB that another rank owns, as a fraction of the
loopback TCP bandwidth between the same two processes in the same run.

    ./dsmexec.py machine_file.example bench/stream.py [--mib 256]

Rank 0 writes the array (so it owns every page); rank 1 copies it into
private memory that is already faulted in: once faulting page after page
with read-ahead, once after dsm.prefetch.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    a = ap.parse_args()
    nbytes = a.mib << 20
    dsm = libdsm.init(size=2 * nbytes + (64 << 20))
    tcp = reference.tcp_bandwidth(dsm, nbytes)
    results = {}
    for how in ("faults", "prefetch"):
        arr = dsm.array(nbytes // 8, "int64")
        if dsm.rank == 0:
            arr[:] = 7
        dsm.barrier()
        if dsm.rank == 1:
            local = np.ones_like(arr)      # faulted in before the clock starts, as TCP's buffer
            t = time.perf_counter()
            if how == "prefetch":
                dsm.prefetch(arr)
            np.copyto(local, arr)
            results[how] = nbytes / (time.perf_counter() - t) / 1e6
            assert (local == 7).all()
        dsm.barrier()
    if dsm.rank == 1:
        print("loopback TCP, raw C: %.0f MB/s" % tcp)
        reference.emit(row="tcp stream", mb_s=tcp)
        for how, bw in results.items():
            name = "sequential read %d MiB (%s)" % (a.mib, how)
            print("%-40s %8.0f MB/s  %5.1f%% of TCP" % (name, bw, 100 * bw / tcp))
            reference.emit(row=name, mb_s=bw, ref_mb_s=tcp)
    dsm.finalize()


if __name__ == "__main__":
    main()
