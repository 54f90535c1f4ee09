"""sor: Jacobi relaxation of Laplace's equation on an n x n grid.

Each rank owns a band of rows (a page-aligned block); between sweeps the
ranks meet at a barrier and swap the grids.  Rank 0 then repeats the same
sweeps alone and requires the distributed result to equal it bit for bit.

    ./dsmexec.py machine_file.example examples/sor.py [n] [sweeps]
"""
import sys

import numpy as np

import libdsm


def initial(n):
    g = np.zeros((n, n))
    g[0, :] = 1.0               # a hot top edge, the rest cold
    g[:, 0] = 0.5
    return g


def sweep(src, dst, lo, hi):
    """Update interior rows lo..hi-1 of dst from src."""
    lo, hi = max(lo, 1), min(hi, src.shape[0] - 1)
    if lo < hi:
        dst[lo:hi, 1:-1] = 0.25 * (src[lo - 1:hi - 1, 1:-1] + src[lo + 1:hi + 1, 1:-1]
                                   + src[lo:hi, :-2] + src[lo:hi, 2:])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    sweeps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    with libdsm.init() as dsm:
        u, v = dsm.array((n, n)), dsm.array((n, n))
        if dsm.rank == 0:
            u[:] = v[:] = initial(n)
        dsm.barrier()
        rows = dsm.row_block(n, n * 8)
        for _ in range(sweeps):
            sweep(u, v, rows.start, rows.stop)
            dsm.barrier()
            u, v = v, u
        if dsm.rank == 0:
            p, q = initial(n), initial(n)
            for _ in range(sweeps):
                sweep(p, q, 0, n)
                p, q = q, p
            same = np.array_equal(np.asarray(u), p)
            print("jacobi n=%d sweeps=%d on %d ranks: checksum %.12f, equal to the "
                  "sequential run: %s" % (n, sweeps, dsm.size, float(np.asarray(u).sum()),
                                          "ok" if same else "WRONG"))
        dsm.barrier()


if __name__ == "__main__":
    main()
