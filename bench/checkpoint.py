"""Checkpoints (docs/checkpoint.md), each against its reference in the same run.

    ./dsmexec.py bench/machines-2hosts bench/checkpoint.py buddy [--mib 256]
    ./dsmexec.py --checkpoint-dir DIR machine_file.example bench/checkpoint.py dir
    ./dsmexec.py machine_file.example bench/checkpoint.py jacobi

  buddy   dsm.checkpoint() of MIB spread over 2 ranks (each homes its half)
          into buddy memory; machines-2hosts names two hosts (localhost and
          127.0.0.1, both this machine), so each half is also copied to the
          other rank.  Reference: memcpy of MIB plus a loopback TCP stream
          of MIB between the same two processes.
  dir     the same into --checkpoint-dir (local disk).  Reference: rank 0
          writing MIB there with os.write + fsync, the faster of once before
          and once after the checkpoints.
  jacobi  bench/kernels.py's Jacobi (2048², 40 sweeps) with a checkpoint
          every 10 sweeps, against the same without, alternating, median of 3.
Each checkpoint row is the median of 3 checkpoints, each after the ranks
wrote their halves again (so the buddy copies move every byte).  `restart` is the
job bench/restart.py runs and kills.
"""
import argparse
import os
import shutil
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernels                     # noqa: E402
import libdsm                      # noqa: E402
import reference                   # noqa: E402

SLACK = 1 << 20


def filled(dsm, nbytes):
    """An array of nbytes, each rank's half homed there."""
    return dsm.array(nbytes // 8, "int64", homes="row_block")


def checkpoints(dsm, arr, times=3):
    """Median seconds of dsm.checkpoint(), each after every rank wrote its
    half again (untimed): so each moves all of it, buddy copies too, not
    pages some rank still holds from the last one."""
    rows = dsm.row_block(arr.shape[0], 8)
    out = []
    for i in range(times):
        arr[rows] = np.arange(rows.start, rows.stop) + i
        dsm.barrier()
        t = time.perf_counter()
        dsm.checkpoint()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def memcpy_seconds(nbytes):
    src, dst = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)
    t = time.perf_counter()
    np.copyto(dst, src)
    return time.perf_counter() - t


def write_fsync_seconds(directory, nbytes):
    data = np.ones(nbytes, np.uint8)
    path = os.path.join(directory, "reference.tmp")
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    view, done = memoryview(data), 0
    while done < nbytes:
        done += os.write(fd, view[done:])
    os.fsync(fd)
    os.close(fd)
    seconds = time.perf_counter() - t
    os.unlink(path)
    return seconds


def buddy(mib):
    nbytes = mib << 20
    dsm = libdsm.init(size=nbytes + SLACK)
    tcp = reference.tcp_bandwidths(dsm, nbytes)
    seconds = checkpoints(dsm, filled(dsm, nbytes))
    tcp = dsm.bcast(tcp, root=1)
    if dsm.rank == 0:
        ref = memcpy_seconds(nbytes) + nbytes / (max(tcp.values()) * 1e6)
        print("checkpoint of %d MiB over 2 ranks, buddy memory: %.3f s; memcpy + loopback "
              "TCP of it: %.3f s (%.2fx)" % (mib, seconds, ref, seconds / ref))
        reference.emit(row="checkpoint, buddy memory", mib=mib, seconds=seconds,
                       ref_seconds=ref)
    dsm.finalize()


def directory(mib):
    nbytes = mib << 20
    dsm = libdsm.init(size=nbytes + SLACK)
    where = os.environ["DSM_CHECKPOINT_DIR"]
    os.makedirs(where, exist_ok=True)
    before = write_fsync_seconds(where, nbytes) if dsm.rank == 0 else None
    seconds = checkpoints(dsm, filled(dsm, nbytes))
    if dsm.rank == 0:           # the faster of before and after: the writeback of one
        ref = min(before, write_fsync_seconds(where, nbytes))   # slows the other
        print("checkpoint of %d MiB over 2 ranks to %s: %.3f s; os.write + fsync of it: "
              "%.3f s (%.2fx)" % (mib, where, seconds, ref, seconds / ref))
        reference.emit(row="checkpoint, directory", mib=mib, seconds=seconds, ref_seconds=ref)
    dsm.finalize()
    if dsm.rank == 0:
        shutil.rmtree(where, ignore_errors=True)


def jacobi(every=10):
    n, sweeps = kernels.JACOBI_N, kernels.JACOBI_SWEEPS
    dsm = libdsm.init(size=2 * n * n * 8 + SLACK)
    u, v = dsm.array((n, n)), dsm.array((n, n))
    lo, hi = kernels.band(n, dsm.rank, dsm.size)
    init = kernels.jacobi_initial(n)

    def run(ckpt):
        u[lo:hi], v[lo:hi] = init[lo:hi], init[lo:hi]
        dsm.barrier()
        a, b = u, v
        t = time.perf_counter()
        for k in range(sweeps):
            if ckpt and k and k % every == 0:
                dsm.checkpoint(k)
            kernels.jacobi_sweep(a, b, lo, hi)
            dsm.barrier()
            a, b = b, a
        return time.perf_counter() - t
    times = {False: [], True: []}
    for _ in range(kernels.REPEATS):
        for ckpt in (False, True):
            dsm.barrier()
            times[ckpt].append(run(ckpt))
    plain, with_ckpt = (statistics.median(times[c]) for c in (False, True))
    if dsm.rank == 0:
        print("jacobi %d², %d sweeps, 2 ranks: %.3f s with a checkpoint every %d sweeps, "
              "%.3f s without (%.2fx)" % (n, sweeps, with_ckpt, every, plain, with_ckpt / plain))
        reference.emit(row="jacobi with checkpoints", seconds=with_ckpt, ref_seconds=plain)
    dsm.finalize()


def restart(mib):
    """bench/restart.py's job: a checkpoint, then (rank 0 reading stdin)
    the driver kills rank 1; restarted, rank 0 says when init() returned."""
    nbytes = mib << 20
    dsm = libdsm.init(size=nbytes + SLACK)
    print("pid %d" % os.getpid(), flush=True)
    if dsm.restored is None:
        arr = filled(dsm, nbytes)
        rows = dsm.row_block(arr.shape[0], 8)
        arr[rows] = np.arange(rows.start, rows.stop)
        dsm.barrier()
        dsm.checkpoint("saved")
        if dsm.rank == 0:
            print("checkpointed", flush=True)
            sys.stdin.readline()
        dsm.barrier()
    elif dsm.rank == 0:
        print("restored at %.6f, the restore in init() %.3f s" % (
            time.time(), dsm.stats()["restore_ns"] / 1e9), flush=True)
    dsm.finalize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("buddy", "dir", "jacobi", "restart"))
    ap.add_argument("--mib", type=int, default=256)
    a = ap.parse_args()
    if a.what == "buddy":
        buddy(a.mib)
    elif a.what == "dir":
        directory(a.mib)
    elif a.what == "restart":
        restart(a.mib)
    else:
        jacobi()


if __name__ == "__main__":
    main()
