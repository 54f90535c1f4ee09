"""The numeric kernels the application benchmarks share, so that the DSM
versions (apps.py) and the message-passing ones (mpi_ref.py) run exactly the
same algorithm on the same data.  numpy only."""
import numpy as np

# Problem sizes of the application rows of BENCHMARKS.md.
JACOBI_N, JACOBI_SWEEPS = 2048, 40
MATMUL_N = 1024
EP_DARTS = 4_000_000            # per rank
REPEATS = 3                     # timed runs of each application; the median counts


def jacobi_initial(n):
    """The grid: a hot top edge, a warm left edge, the rest cold."""
    g = np.zeros((n, n))
    g[0, :] = 1.0
    g[:, 0] = 0.5
    return g


def jacobi_sweep(src, dst, lo, hi):
    """Update interior rows lo..hi-1 of dst from src (rows lo-1..hi of src)."""
    lo, hi = max(lo, 1), min(hi, src.shape[0] - 1)
    if lo < hi:
        dst[lo:hi, 1:-1] = 0.25 * (src[lo - 1:hi - 1, 1:-1] + src[lo + 1:hi + 1, 1:-1]
                                   + src[lo:hi, :-2] + src[lo:hi, 2:])


def band(n, rank, size):
    """The rows rank owns: equal contiguous bands (the last may be shorter)."""
    per = -(-n // size)
    return min(n, rank * per), min(n, (rank + 1) * per)


def matmul_inputs(n):
    rng = np.random.default_rng(42)
    return rng.random((n, n)), rng.random((n, n))


def ep_hits(rank, darts):
    """Darts of one rank inside the quarter circle."""
    rng = np.random.default_rng(1000 + rank)
    x, y = rng.random(darts), rng.random(darts)
    return int(np.count_nonzero(x * x + y * y <= 1.0))
