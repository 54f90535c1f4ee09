"""histogram: each rank histograms its share of the samples; allreduce sums the counts.

    dsmexec -n 4 examples/histogram.py [samples_per_rank]

Each rank draws its own normally distributed samples (seeded by rank),
counts them into the same bins, and `allreduce` adds the counts of every
rank (done by the comm threads; every rank gets the sum).  Rank 0 prints
the histogram and checks it against counting every rank's samples alone.
"""
import sys

import numpy as np

import libdsm

BINS = np.linspace(-4.0, 4.0, 17)


def samples(rank, n):
    return np.random.default_rng(2000 + rank).normal(size=n)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with libdsm.init() as dsm:
        mine, _ = np.histogram(samples(dsm.rank, n), BINS)
        counts = dsm.allreduce(mine.astype(np.int64), op="sum")
        if dsm.rank == 0:
            for lo, count in zip(BINS, counts):
                print("%+5.1f %8d %s" % (lo, count, "#" * int(60 * count / counts.max())))
            alone, _ = np.histogram(np.concatenate([samples(r, n) for r in range(dsm.size)]),
                                    BINS)
            same = np.array_equal(counts, alone)
            print("%d samples in range of %d on %d ranks, counted alone: %s"
                  % (counts.sum(), n * dsm.size, dsm.size, "ok" if same else "WRONG"))


if __name__ == "__main__":
    main()
