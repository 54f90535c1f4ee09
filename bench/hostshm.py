"""Host-shared memory (DSM_SHARE=host, issue 20): 2 ranks on one host against
the same work on multiprocessing.shared_memory and on mpi4py with Open MPI's
default transports (shared memory on one host), each measured in the same
run.  Rank 0 (or the parent) prints the results and a BENCH line per row.

    ./dsmexec.py -n 2 bench/hostshm.py dsm fill|barrier|jacobi|matmul
    .venv/bin/python bench/hostshm.py shm fill|jacobi|matmul       (2 processes)
    mpirun -n 2 .venv/bin/python bench/hostshm.py mpi barrier|jacobi|matmul

  fill      each rank fills its rows of a fresh 64 MiB array (default homes),
            a barrier, rank 0 sums it; median of FILL_ROUNDS rounds, and the
            first (the DSM's allocator reuses freed space, whose pages are
            then backed already; each shared_memory round is a new segment)
  barrier   back-to-back barriers, each timed
  jacobi    bench/kernels.py's sweeps, a barrier after each   } apps.py's code,
  matmul    rank 0 writes A and B, each rank its rows of C  } on both sides

The dsm side runs in host-shared mode whatever DSM_SHARE says; its rows are
named "host ...", the references' "shm ..." and "mpi-sm ...".
"""
import multiprocessing as mp
import os
import sys
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps                        # noqa: E402
import kernels                     # noqa: E402
import reference                   # noqa: E402
from sync_latency import loop      # noqa: E402

FILL_SHAPE = (2048, 4096)          # 64 MiB of float64
FILL_ROUNDS = 7
BARRIERS = 20000


def fill_round(rank, size, array, barrier):
    """The rest of a fill round, the array allocated: rank 0's sum (None elsewhere)."""
    lo, hi = kernels.band(FILL_SHAPE[0], rank, size)
    array[lo:hi] = rank + 1.0
    barrier()
    total = float(array.sum()) if rank == 0 else None
    barrier()
    return total


def expected_fill(size):
    return sum((r + 1.0) * (kernels.band(FILL_SHAPE[0], r, size)[1]
                            - kernels.band(FILL_SHAPE[0], r, size)[0])
               for r in range(size)) * FILL_SHAPE[1]


# ---------------------------------------------------------------- dsm

def dsm_fill(dsm):
    out, faults = [], 0
    for _ in range(FILL_ROUNDS):
        dsm.barrier()
        before = dsm.stats()
        t = time.perf_counter()
        a = dsm.array(FILL_SHAPE)
        total = fill_round(dsm.rank, dsm.size, a, dsm.barrier)
        out.append(time.perf_counter() - t)
        after = dsm.stats()
        faults += sum(after[k] - before[k] for k in ("read_faults", "write_faults"))
        assert dsm.rank or total == expected_fill(dsm.size), total
        dsm.free(a)
    faults = int(dsm.allreduce(faults, "sum"))
    return {"seconds": sorted(out)[len(out) // 2], "first_seconds": out[0], "faults": faults}


def dsm_barrier(dsm):
    loop(BARRIERS // 10, dsm.barrier)
    med, p99 = reference.summary(loop(BARRIERS, dsm.barrier))
    return {"median_us": med, "p99_us": p99}


def dsm_main(kind):
    import libdsm
    dsm = libdsm.init(size=256 << 20, share="host")
    fields = {"fill": dsm_fill, "barrier": dsm_barrier}.get(kind)
    fields = fields(dsm) if fields else {"seconds": getattr(apps, kind)(dsm)}
    if dsm.rank == 0:
        print("host %-8s %s" % (kind, fields))
        reference.emit(row="host " + kind, **fields)
    dsm.finalize()


# ---------------------------------------------------------------- shared_memory

def shm_fill(rank, size, barrier, names):
    """Each round rank 0 makes a fresh segment and passes its name on."""
    out = []
    for _ in range(FILL_ROUNDS):
        barrier.wait()
        t = time.perf_counter()
        if rank == 0:
            seg = shared_memory.SharedMemory(create=True, size=8 * FILL_SHAPE[0] * FILL_SHAPE[1])
            for q in names[1:]:
                q.put(seg.name)
        else:
            seg = shared_memory.SharedMemory(name=names[rank].get())
        a = np.ndarray(FILL_SHAPE, np.float64, seg.buf)
        total = fill_round(rank, size, a, barrier.wait)
        out.append(time.perf_counter() - t)
        assert rank or total == expected_fill(size), total
        del a
        seg.close()
        barrier.wait()
        if rank == 0:
            seg.unlink()
    return {"seconds": sorted(out)[len(out) // 2], "first_seconds": out[0]}


class ShmRank:
    """What apps.py's kernels ask of the DSM, on shared_memory segments the
    parent made: array() takes the next one, in the order every rank asks."""

    def __init__(self, rank, size, barrier, names):
        self.rank, self.size, self.barrier = rank, size, barrier.wait
        self._names, self._segs = list(names), []

    def array(self, shape):
        self._segs.append(shared_memory.SharedMemory(name=self._names.pop(0)))
        return np.ndarray(shape, np.float64, self._segs[-1].buf)

    def prefetch(self, _):
        """Nothing to fetch: the memory is shared."""


def shm_kernel(kind):
    """apps.py's kernel `kind` itself, run on shared_memory."""
    def run(rank, size, barrier, names):
        return {"seconds": getattr(apps, kind)(ShmRank(rank, size, barrier, names))}
    return run


SHM = {"fill": (shm_fill, 0), "jacobi": (shm_kernel("jacobi"), 2),
       "matmul": (shm_kernel("matmul"), 3)}


def shm_rank(kind, rank, size, barrier, names, results):
    fields = SHM[kind][0](rank, size, barrier, names)
    if rank == 0:
        results.put(fields)


def shm_main(kind, size=2):
    """size processes (fork) on segments made here; the fill row's queues
    carry each round's segment name instead."""
    ctx = mp.get_context("fork")
    resource_tracker.ensure_running()   # one tracker for all: who unlinks unregisters
    nsegs = SHM[kind][1]
    n = kernels.JACOBI_N if kind == "jacobi" else kernels.MATMUL_N
    segs = [shared_memory.SharedMemory(create=True, size=8 * n * n) for _ in range(nsegs)]
    names = [s.name for s in segs] if nsegs else [ctx.Queue() for _ in range(size)]
    barrier, results = ctx.Barrier(size), ctx.Queue()
    procs = [ctx.Process(target=shm_rank, args=(kind, r, size, barrier, names, results))
             for r in range(size)]
    for p in procs:
        p.start()
    fields = results.get()
    for p in procs:
        p.join()
    for s in segs:
        s.close()
        s.unlink()
    if any(p.exitcode for p in procs):
        raise SystemExit("a shared_memory process failed")
    print("shm %-8s %s" % (kind, fields))
    reference.emit(row="shm " + kind, **fields)


# ---------------------------------------------------------------- mpi

def mpi_main(kind):
    """mpi_ref.py's kind, its row renamed: here Open MPI picks its own
    (shared-memory) transports."""
    import mpi_ref
    emit = reference.emit
    reference.emit = lambda row, **fields: emit(row=row.replace("mpi", "mpi-sm", 1), **fields)
    comm = mpi_ref.MPI.COMM_WORLD
    if kind == "barrier":
        mpi_ref.barrier(comm, BARRIERS, BARRIERS // 10)
    else:
        mpi_ref.KINDS[kind](comm)


def main():
    side, kind = sys.argv[1:3]
    {"dsm": dsm_main, "shm": shm_main, "mpi": mpi_main}[side](kind)


if __name__ == "__main__":
    main()
