"""False sharing, the case release consistency is for: every rank writes
its own 8-byte slot of the same pages, then all meet at a barrier, round
after round.  Run it in both modes; bench/run.py sets the two against each
other (the reference is the sequential mode, in the same run).

    ./dsmexec.py bench/machines-4 bench/false_sharing.py [rounds]
    DSM_CONSISTENCY=release ./dsmexec.py bench/machines-4 bench/false_sharing.py

Rank 0 checks every slot and prints the seconds and the per-round time.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402

PAGES = 4


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with libdsm.init() as dsm:
        mode = os.environ.get("DSM_CONSISTENCY", "sequential") or "sequential"
        slots = dsm.array((PAGES, dsm.page_size // 8), "int64")
        dsm.barrier()
        t = time.perf_counter()
        for r in range(1, rounds + 1):
            slots[:, dsm.rank] = r          # one 8-byte write per page
            dsm.barrier()
        seconds = time.perf_counter() - t
        assert (np.asarray(slots[:, :dsm.size]) == rounds).all()
        if dsm.rank == 0:
            print("false sharing, %s mode, %d ranks x %d rounds x %d pages: %.3f s "
                  "(%.1f us a round)" % (mode, dsm.size, rounds, PAGES, seconds,
                                         seconds / rounds * 1e6))
            reference.emit(row="false sharing (%s)" % mode, seconds=seconds)


if __name__ == "__main__":
    main()
