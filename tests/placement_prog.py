"""Page placement under real ranks (test_placement.py runs it).

    placement_prog.py fill ROWS COLS HOMES [pad]   each rank fills its rows of
        a fresh array made with homes=HOMES ("none" for round-robin); prints
        its write faults and whether every rank's rows read back right
    placement_prog.py rehome ROWS COLS             rank 0 writes every row, the
        array is placed by row_block (dsm.place), every rank checks the data,
        then writes its own rows again; then an array made with
        homes="first_touch" whose rows each rank writes before a barrier
    placement_prog.py mismatch                     rank 0 places by row_block,
        the others by first_touch: each prints the error it gets
    placement_prog.py not_leader                   every rank asks the C core to
        home a page at rank 1 (with share=host on 2 virtual hosts of 2, not
        a host's leader): each prints the error it gets
    placement_prog.py counts ROWS COLS HOMES       each rank fills its rows of a
        fresh padded array (HOMES "row_block": made so; "first_touch": placed
        by dsm.place after the fill; "none"), reads them back, then rank 0
        reads every row; prints the homes of its rows, what the fill, the
        placement, the re-read and rank 0's read cost (stats deltas), and
        the sums
"""
import sys

import numpy as np

import libdsm
from libdsm import _binding


def check_all(dsm, arr, value_of):
    """Every row holds value_of(its row_block owner) + its row index."""
    nrows = arr.shape[0]
    for q in range(dsm.size):
        rows = dsm.row_block(nrows, arr.strides[0], q)
        want = value_of(q) + np.arange(rows.start, rows.stop)[:, None]
        if not np.array_equal(arr[rows], np.broadcast_to(want, arr[rows].shape)):
            return False
    return True


def band_homes(dsm, arr, rows):
    """The homes of the pages under arr[rows]."""
    offset, nbytes = dsm._memory.span(arr[rows]) if rows.stop > rows.start else (0, 0)
    first = offset // dsm.page_size
    last = -(-(offset + nbytes) // dsm.page_size)
    return {dsm.page_home(p) for p in range(first, last)}


def fill(dsm, nrows, ncols, homes, pad):
    arr = dsm.array((nrows, ncols), "float64", pad_rows=pad,
                    homes=None if homes == "none" else homes)
    rows = dsm.row_block(nrows, arr.strides[0])
    dsm.barrier()
    before = dsm.stats()["write_faults"]
    arr[rows] = dsm.rank * 1000 + np.arange(rows.start, rows.stop)[:, None]
    faults = dsm.stats()["write_faults"] - before
    dsm.barrier()
    ok = check_all(dsm, arr, lambda q: q * 1000)
    print("fill homes=%s write_faults=%d ok=%d own_homes=%s"
          % (homes, faults, ok, sorted(band_homes(dsm, arr, rows))))


def rehome(dsm, nrows, ncols):
    for how in ("row_block", "first_touch"):
        arr = dsm.array((nrows, ncols), "float64", homes=None if how == "row_block" else how)
        rows = dsm.row_block(nrows, arr.strides[0])
        if how == "first_touch":        # every rank writes its rows: they become its pages
            arr[rows] = 7 + np.arange(rows.start, rows.stop)[:, None]
        elif dsm.rank == 0:             # rank 0 writes everything: the pages sit with it
            arr[:] = 7 + np.arange(nrows)[:, None]
        dsm.barrier()                   # first_touch: placed here
        if how == "row_block":
            dsm.place(arr, how)
        before = check_all(dsm, arr, lambda q: 7)
        homes = band_homes(dsm, arr, rows)
        dsm.barrier()
        start = dsm.stats()["write_faults"]
        arr[rows] = 100 * (dsm.rank + 1) + np.arange(rows.start, rows.stop)[:, None]
        faults = dsm.stats()["write_faults"] - start
        dsm.barrier()
        after = check_all(dsm, arr, lambda q: 100 * (q + 1))
        print("rehome %s before=%d after=%d own_homes=%s write_faults=%d"
              % (how, before, after, sorted(homes), faults))
        dsm.free(arr)                   # collective: every rank frees it


def delta(dsm, before, keys=("write_faults", "read_faults", "msgs_sent", "host_msgs",
                              "pages_sent", "host_maps", "homes_moved")):
    """The stats that changed since `before`, as k=v words."""
    now = dsm.stats()
    return " ".join("%s=%d" % (k, now[k] - before[k]) for k in keys)


def counts(dsm, nrows, ncols, homes):
    arr = dsm.array((nrows, ncols), "float64", pad_rows=True,
                    homes="row_block" if homes == "row_block" else None)
    rows = dsm.row_block(nrows, arr.strides[0])
    dsm.barrier()
    start = dsm.stats()
    arr[rows] = dsm.rank * 1000 + np.arange(rows.start, rows.stop)[:, None]
    fill = delta(dsm, start)
    dsm.barrier()                       # every fault of the fill served
    start = dsm.stats()
    if homes == "first_touch":
        dsm.place(arr, "first_touch")
    placed = delta(dsm, start)
    dsm.barrier()
    start = dsm.stats()
    mine = float(arr[rows].sum())
    reread = delta(dsm, start)
    dsm.barrier()
    start = dsm.stats()
    total = float(arr.sum()) if dsm.rank == 0 else 0.0
    read = delta(dsm, start)            # rank 0's: the others wait in the barrier
    dsm.barrier()
    print("counts homes=%s own_homes=%s | fill %s | place %s | reread %s | read %s "
          "| mine=%.0f total=%.0f" % (homes, sorted(band_homes(dsm, arr, rows)), fill, placed,
                                      reread, read, mine, total))


def not_leader(dsm):
    page = dsm.page_of(dsm._memory.span(dsm.array((4, 1024), "float64"))[0])
    home = dsm.page_home(page)
    try:
        _binding.place(page, 1, [1])
    except libdsm.DsmError as e:
        print("not_leader %s %s" % (type(e).__name__, e))
    print("not_leader then home %s" % ("kept" if dsm.page_home(page) == home else "moved"))


def mismatch(dsm, other):
    """Rank 0 places an array by row_block; the others place it by
    first_touch, or (other == "barrier") call barrier() instead."""
    arr = dsm.array((64, 1024), "float64")
    try:
        if dsm.rank == 0:
            dsm.place(arr, "row_block")
        elif other == "barrier":
            dsm.barrier()
        else:
            dsm.place(arr, "first_touch")
    except libdsm.CollectiveError as e:
        print("mismatch %s" % type(e).__name__)
    dsm.barrier()
    print("mismatch then barrier ok")


def main():
    what = sys.argv[1]
    with libdsm.init() as dsm:
        if what == "fill":
            fill(dsm, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], "pad" in sys.argv[5:])
        elif what == "rehome":
            rehome(dsm, int(sys.argv[2]), int(sys.argv[3]))
        elif what == "counts":
            counts(dsm, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        elif what == "not_leader":
            not_leader(dsm)
        else:
            mismatch(dsm, sys.argv[2])


if __name__ == "__main__":
    main()
