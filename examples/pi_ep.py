"""pi_ep: an embarrassingly parallel Monte Carlo estimate of pi.

Each rank throws its own darts (seeded by rank) and adds its hits to a shared
total under a lock.  Rank 0 replays every rank's darts alone and requires the
same count.

    ./dsmexec.py machine_file.example examples/pi_ep.py [darts_per_rank]
"""
import sys

import numpy as np

import libdsm


def hits(rank, darts):
    rng = np.random.default_rng(1000 + rank)
    x, y = rng.random(darts), rng.random(darts)
    return int(np.count_nonzero(x * x + y * y <= 1.0))


def main():
    darts = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with libdsm.init() as dsm:
        total = dsm.array(1, "int64")
        mine = hits(dsm.rank, darts)
        with dsm.lock(1):
            total[0] += mine
        dsm.barrier()
        if dsm.rank == 0:
            expected = sum(hits(r, darts) for r in range(dsm.size))
            got = int(total[0])
            print("pi ~= %.6f from %d darts on %d ranks; hits %d, sequential %d: %s"
                  % (4.0 * got / (darts * dsm.size), darts * dsm.size, dsm.size, got,
                     expected, "ok" if got == expected else "WRONG"))
        dsm.barrier()


if __name__ == "__main__":
    main()
