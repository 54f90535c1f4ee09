"""Page homes that follow the data: every rank fills its own rows
(row_block) of a fresh array (pages no rank touched before), with
round-robin homes and with homes="row_block", alternating, in the same
run.  Each fill is timed from dsm.array() (the placement included) to the
barrier after it; the write faults are those of the fill, summed over the
ranks.

    ./dsmexec.py machine_file.example bench/placement.py [rows] [cols] [rounds]
    DSM_SHARE=host DSM_VHOSTS=2 ./dsmexec.py -n 4 bench/placement.py

Rank 0 prints the medians and their ratios.  Host-shared across hosts
(the second line: 2 virtual hosts x 2 ranks) the row is the write faults
(a leader's own rows are there, the other rank's a local hit each), not
the times, which the 4 ranks on the machine's cores make noise.
"""
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402


def fill(dsm, shape, homes):
    """(seconds, write faults summed over the ranks) of one fill."""
    dsm.barrier()
    t = time.perf_counter()
    arr = dsm.array(shape, "float64", homes=homes)
    rows = dsm.row_block(shape[0], arr.strides[0])
    before = dsm.stats()["write_faults"]
    arr[rows] = dsm.rank + 1
    faults = dsm.stats()["write_faults"] - before
    dsm.barrier()
    seconds = time.perf_counter() - t
    mine = dsm.row_block(shape[0], arr.strides[0], (dsm.rank + 1) % dsm.size)
    assert (arr[mine] == (dsm.rank + 1) % dsm.size + 1).all()     # a neighbour's rows
    return seconds, dsm.allreduce(faults)


def main():
    rows, cols, rounds = (int(a) for a in (sys.argv[1:] + ["2048", "512", "5"])[:3])
    nbytes = rows * cols * 8
    room = -(-4 * rounds * nbytes // (1 << 20)) << 20      # two arrays a round, and slack
    with libdsm.init(size=max(64 << 20, room)) as dsm:
        got = {None: [], "row_block": []}
        for _ in range(rounds):
            for homes in got:
                got[homes].append(fill(dsm, (rows, cols), homes))
        if dsm.rank == 0:
            rr, rb = ([statistics.median(x[i] for x in got[h]) for i in (0, 1)]
                      for h in (None, "row_block"))
            print("%d ranks fill their rows of %d x %d float64 (%.0f MiB): round-robin homes "
                  "%.1f ms, %d write faults; homes=row_block %.1f ms, %d write faults "
                  "(%.1fx faster)" % (dsm.size, rows, cols, rows * cols * 8 / 2**20,
                                      rr[0] * 1e3, rr[1], rb[0] * 1e3, rb[1], rr[0] / rb[0]))
            across = os.environ.get("DSM_SHARE") == "host" and \
                os.environ.get("DSM_VHOSTS", "1") != "1"
            reference.emit(row="own rows, placed" + (", across hosts" if across else ""),
                           ranks=dsm.size, seconds=rb[0],
                           faults=rb[1], ref_seconds=rr[0], ref_faults=rr[1])


if __name__ == "__main__":
    main()
