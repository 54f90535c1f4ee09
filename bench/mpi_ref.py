"""The message-passing reference: Open MPI (mpi4py) over TCP running the
same kernels (bench/kernels.py) and the same barrier as the DSM rows.

    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \\
    MPI4PY_RC_THREAD_LEVEL=serialized OPENBLAS_NUM_THREADS=1 \\
    mpirun --oversubscribe --bind-to none --mca btl tcp,self --mca pml ob1 \\
           --mca osc pt2pt -n N .venv/bin/python bench/mpi_ref.py KIND...

  barrier   back-to-back comm.Barrier(), each one timed
  allreduce back-to-back comm.Allreduce of 8 doubles, each one timed
  jacobi    halo exchange with Sendrecv, then jacobi_sweep on the band
  matmul    Bcast B, Scatter A's row bands, A_rows @ B, Gather (N divides 1024)
  ep        (N = 2) ep_hits on each rank, then allreduce

Several kinds run one after the other in one job (bench/scale.py runs
`barrier allreduce jacobi matmul` at N = 2 to 16; Open MPI 5 has no osc
pt2pt, so leave that option out there).

Rank 0 prints the results, and one BENCH line per row.
"""
import argparse
import os
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels                     # noqa: E402
import reference                   # noqa: E402

clock = time.perf_counter_ns


# ---------------------------------------------------------------- barrier

def barrier(comm, iters=20000, warmup=2000):
    for _ in range(warmup):
        comm.Barrier()
    out = [0] * iters
    for i in range(iters):
        t = clock()
        comm.Barrier()
        out[i] = clock() - t
    if comm.rank == 0:
        med, p99 = reference.summary(out)
        row = "mpi barrier %d" % comm.size
        print("%-16s median %.1f us  p99 %.1f us" % (row, med, p99))
        reference.emit(row=row, median_us=med, p99_us=p99)


def allreduce(comm, iters=20000, warmup=2000):
    x, out = np.ones(8), np.empty(8)
    for _ in range(warmup):
        comm.Allreduce(x, out, op=MPI.SUM)
    times = [0] * iters
    for i in range(iters):
        t = clock()
        comm.Allreduce(x, out, op=MPI.SUM)
        times[i] = clock() - t
    assert np.array_equal(out, np.full(8, float(comm.size))), "MPI Allreduce gave %r" % out
    if comm.rank == 0:
        med, p99 = reference.summary(times)
        row = "mpi allreduce %d" % comm.size
        print("%-16s median %.1f us  p99 %.1f us" % (row, med, p99))
        reference.emit(row=row, median_us=med, p99_us=p99)


# ---------------------------------------------------------------- jacobi

def jacobi_sequential(n, sweeps):
    src = kernels.jacobi_initial(n)
    dst = src.copy()
    for _ in range(sweeps):
        kernels.jacobi_sweep(src, dst, 0, n)
        src, dst = dst, src
    return src


def jacobi(comm):
    n, sweeps = kernels.JACOBI_N, kernels.JACOBI_SWEEPS
    lo, hi = kernels.band(n, comm.rank, comm.size)
    up = comm.rank - 1 if comm.rank > 0 else MPI.PROC_NULL
    down = comm.rank + 1 if comm.rank < comm.size - 1 else MPI.PROC_NULL
    spare = np.empty(n)            # the halo buffer towards no neighbour
    state = {}

    def row(a, i, peer):
        return a[i] if peer != MPI.PROC_NULL else spare

    def run():
        # Full-size grids keep jacobi_sweep's global row indices; only the
        # band and its two halo rows are ever read.
        src = kernels.jacobi_initial(n)
        dst = src.copy()
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(sweeps):
            comm.Sendrecv(row(src, lo, up), up, 0, row(src, hi, down), down, 0)
            comm.Sendrecv(row(src, hi - 1, down), down, 1, row(src, lo - 1, up), up, 1)
            kernels.jacobi_sweep(src, dst, lo, hi)
            src, dst = dst, src
        comm.Barrier()
        seconds = time.perf_counter() - t
        state["grid"] = src
        return seconds

    seconds = reference.repeated(comm.Barrier, run, kernels.REPEATS)
    bands = comm.gather(state["grid"][lo:hi], root=0)
    if comm.rank == 0:
        assert np.array_equal(np.vstack(bands), jacobi_sequential(n, sweeps)), \
            "the MPI Jacobi differs from the sequential one"
        print("mpi jacobi  %dx%d, %d sweeps, %d ranks: %.3f s (median of %d)"
              % (n, n, sweeps, comm.size, seconds, kernels.REPEATS))
        reference.emit(row="mpi jacobi", seconds=seconds)


# ---------------------------------------------------------------- matmul

def matmul(comm):
    n = kernels.MATMUL_N
    if n % comm.size:
        raise SystemExit("MATMUL_N=%d is not divisible by %d ranks" % (n, comm.size))
    lo, hi = kernels.band(n, comm.rank, comm.size)
    if comm.rank == 0:
        A, B = kernels.matmul_inputs(n)
        C = np.empty((n, n))
    else:
        A, B, C = None, np.empty((n, n)), None
    rows = np.empty((hi - lo, n))

    def run():
        t = time.perf_counter()
        comm.Bcast(B, root=0)
        comm.Scatter(A, rows, root=0)
        block = rows @ B
        comm.Gather(block, C, root=0)
        return time.perf_counter() - t

    seconds = reference.repeated(comm.Barrier, run, kernels.REPEATS)
    if comm.rank == 0:
        assert np.allclose(C, A @ B), "the MPI matmul differs from A @ B"
        print("mpi matmul  %dx%d, %d ranks: %.3f s (median of %d)"
              % (n, n, comm.size, seconds, kernels.REPEATS))
        reference.emit(row="mpi matmul", seconds=seconds)


# ---------------------------------------------------------------- ep

def ep(comm):
    darts = kernels.EP_DARTS
    state = {}

    def run():
        t = time.perf_counter()
        state["total"] = comm.allreduce(kernels.ep_hits(comm.rank, darts))
        return time.perf_counter() - t

    seconds = reference.repeated(comm.Barrier, run, kernels.REPEATS)
    if comm.rank == 0:
        expected = sum(kernels.ep_hits(r, darts) for r in range(comm.size))
        assert state["total"] == expected, "the MPI ep total differs: %d != %d" \
            % (state["total"], expected)
        pi = 4.0 * state["total"] / (darts * comm.size)
        print("mpi ep  %d darts x %d ranks (pi ~ %.5f): %.3f s (median of %d)"
              % (darts, comm.size, pi, seconds, kernels.REPEATS))
        reference.emit(row="mpi ep", seconds=seconds)


KINDS = {"barrier": barrier, "allreduce": allreduce, "jacobi": jacobi, "matmul": matmul,
         "ep": ep}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=sorted(KINDS), nargs="+")
    ap.add_argument("--iters", type=int, default=20000,
                    help="timed operations of barrier and allreduce (default %(default)s)")
    a = ap.parse_args()
    comm = MPI.COMM_WORLD
    if "ep" in a.kind and comm.size != 2:
        raise SystemExit("ep: run with exactly 2 ranks (mpirun -n 2)")
    for kind in a.kind:
        if kind in ("barrier", "allreduce"):
            KINDS[kind](comm, a.iters, a.iters // 10)
        else:
            KINDS[kind](comm)
        comm.Barrier()


if __name__ == "__main__":
    main()
