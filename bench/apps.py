"""The application rows: the kernels of bench/kernels.py written for the DSM,
to set against the same kernels with mpi4py (bench/mpi_ref.py).

    OPENBLAS_NUM_THREADS=1 ./dsmexec.py machine_file.example bench/apps.py KIND

  jacobi   each rank initialises and sweeps its band; a barrier between
           sweeps; neighbours' boundary rows arrive by page faults
  matmul   rank 0 fills A and B; each rank prefetches its rows of A and all
           of B, multiplies, writes its rows of C
  ep       ep_hits on each rank, the total added under a lock

Each is timed 3 times (after a barrier); rank 0 prints the median.  With
DSM_CONSISTENCY=release the rows are named "... (release)".
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels                     # noqa: E402
import libdsm                      # noqa: E402
import reference                   # noqa: E402


def jacobi(dsm):
    n, sweeps = kernels.JACOBI_N, kernels.JACOBI_SWEEPS
    u, v = dsm.array((n, n)), dsm.array((n, n))
    lo, hi = kernels.band(n, dsm.rank, dsm.size)
    init = kernels.jacobi_initial(n)

    def run():
        u[lo:hi], v[lo:hi] = init[lo:hi], init[lo:hi]     # owner computes
        dsm.barrier()
        a, b = u, v
        t = time.perf_counter()
        for _ in range(sweeps):
            kernels.jacobi_sweep(a, b, lo, hi)
            dsm.barrier()
            a, b = b, a
        return time.perf_counter() - t
    seconds = reference.repeated(dsm.barrier, run, kernels.REPEATS)
    if dsm.rank == 0:
        p, q = kernels.jacobi_initial(n), kernels.jacobi_initial(n)
        for _ in range(sweeps):
            kernels.jacobi_sweep(p, q, 0, n)
            p, q = q, p
        assert np.array_equal(np.asarray(u if sweeps % 2 == 0 else v), p)
    return seconds


def matmul(dsm):
    n = kernels.MATMUL_N
    a, b, c = (dsm.array((n, n)) for _ in range(3))
    lo, hi = kernels.band(n, dsm.rank, dsm.size)
    inputs = kernels.matmul_inputs(n)

    def run():
        if dsm.rank == 0:               # (re)written each time: other copies go
            a[:], b[:] = inputs
        dsm.barrier()
        t = time.perf_counter()
        dsm.prefetch(a[lo:hi])
        dsm.prefetch(b)
        c[lo:hi] = a[lo:hi] @ b
        dsm.barrier()
        return time.perf_counter() - t
    seconds = reference.repeated(dsm.barrier, run, kernels.REPEATS)
    if dsm.rank == 0:
        assert np.allclose(c, inputs[0] @ inputs[1])
    return seconds


def ep(dsm):
    total = dsm.array(1, "int64")
    lock = dsm.lock(0)

    def run():
        if dsm.rank == 0:
            total[0] = 0
        dsm.barrier()
        t = time.perf_counter()
        hits = kernels.ep_hits(dsm.rank, kernels.EP_DARTS)
        with lock:
            total[0] += hits
        dsm.barrier()
        return time.perf_counter() - t
    seconds = reference.repeated(dsm.barrier, run, kernels.REPEATS)
    assert total[0] == sum(kernels.ep_hits(r, kernels.EP_DARTS) for r in range(dsm.size))
    return seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["jacobi", "matmul", "ep"])
    a = ap.parse_args()
    dsm = libdsm.init(size=256 << 20)
    seconds = globals()[a.kind](dsm)
    if dsm.rank == 0:
        mode = " (release)" if os.environ.get("DSM_CONSISTENCY") == "release" else ""
        print("dsm %-8s %.3f s%s" % (a.kind, seconds, mode))
        reference.emit(row="dsm " + a.kind + mode, seconds=seconds)
    dsm.finalize()


if __name__ == "__main__":
    main()
