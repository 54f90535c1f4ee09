"""row_fill: each rank fills its own rows of a shared array; rank 0 checks the sum.

    dsmexec -n 4 examples/row_fill.py [rows] [cols]

`homes="row_block"` makes each rank the home of the rows `row_block` gives
it, so its rows are already here, writable, and filling them takes no page
fault (with the default round-robin homes most of them would be fetched
from another rank first).  Row i holds i + 1 everywhere, so a row nobody
filled, or filled twice, changes the sum rank 0 checks.
"""
import sys

import numpy as np

import libdsm


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    cols = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    with libdsm.init() as dsm:
        grid = dsm.array((rows, cols), "float64", homes="row_block")
        mine = dsm.row_block(rows, grid.strides[0])     # this rank's rows, on its own pages
        before = dsm.stats()["write_faults"]
        grid[mine] = np.arange(mine.start, mine.stop)[:, None] + 1
        faults = dsm.stats()["write_faults"] - before
        print("rank %d filled rows %d-%d with %d write faults"
              % (dsm.rank, mine.start, mine.stop - 1, faults))
        dsm.barrier()                                   # every row is written
        if dsm.rank == 0:
            got = float(grid.sum())
            expected = cols * rows * (rows + 1) / 2
            print("sum of %dx%d on %d ranks: %.0f, expected %.0f: %s"
                  % (rows, cols, dsm.size, got, expected, "ok" if got == expected else "WRONG"))
        dsm.barrier()                                   # rank 0 is done reading


if __name__ == "__main__":
    main()
