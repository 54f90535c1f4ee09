"""jacobi_ckpt: examples/sor.py's Jacobi sweeps, with a checkpoint every few sweeps.

Run it under ``dsmexec --restarts K``: after a rank dies the job starts
again from the last checkpoint, and the final grid is the same bit for bit
as a run without failures.  Rank 0 prints the grid's checksum and, given
--out FILE, saves it there (.npy).  --progress prints each rank's host, a
line per sweep and one before each checkpoint (a test kills ranks on them);
--pause-at K stops each run that reaches sweep K there until rank 0 reads a
line (none once stdin is at its end).

    ./dsmexec.py --restarts 3 -n 2 examples/jacobi_ckpt.py [n] [sweeps] [every] [--out F]
"""
import argparse
import hashlib
import os
import sys

import numpy as np

import libdsm
from sor import initial, sweep


def options():
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int, nargs="?", default=128)
    p.add_argument("sweeps", type=int, nargs="?", default=50)
    p.add_argument("every", type=int, nargs="?", default=10, help="sweeps between checkpoints")
    p.add_argument("--out", help="rank 0 saves the final grid here")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--pause-at", type=int, metavar="K",
                   help="each run's rank 0 reads a line of stdin before sweep K (the "
                   "others wait at the barrier): a moment for a test to act")
    return p.parse_args()


def main():
    a = options()
    with libdsm.init() as dsm:
        say = (lambda text: print(text, flush=True)) if a.progress else (lambda text: None)
        say("on %s" % dsm.hostname())
        say("pid %d" % os.getpid())
        # Named arrays: a restarted job finds them restored, by name; the
        # state is the sweep to go on from, the same on every rank, so
        # rank 0's serves ranks that have none (a restart with more ranks).
        u, v = dsm.array((a.n, a.n), name="jacobi.u"), dsm.array((a.n, a.n), name="jacobi.v")
        start = dsm.bcast(dsm.restored)
        if start is None:
            if dsm.rank == 0:
                u[:] = v[:] = initial(a.n)
            start = 0
        else:
            say("restarted at sweep %d" % start)
        if start % 2:
            u, v = v, u
        dsm.barrier()
        rows = dsm.row_block(a.n, a.n * 8)
        for k in range(start, a.sweeps):
            if a.every and k % a.every == 0 and k != start:
                say("checkpoint %d" % k)
                dsm.checkpoint(k)
            say("sweep %d" % k)
            if k == a.pause_at and dsm.rank == 0:
                print("paused at sweep %d" % k, flush=True)
                sys.stdin.readline()
            sweep(u, v, rows.start, rows.stop)
            dsm.barrier()
            u, v = v, u
        if dsm.rank == 0:
            grid = np.asarray(u)
            print("jacobi n=%d sweeps=%d on %d ranks: sha256 %s" % (
                a.n, a.sweeps, dsm.size, hashlib.sha256(grid.tobytes()).hexdigest()[:16]))
            if a.out:
                dsm.save(a.out, u)
        dsm.barrier()


if __name__ == "__main__":
    main()
