"""Arrays that free themselves, and saving them, on real ranks
(tests/test_lifetime.py).  argv[1] names the scenario; each prints one
line per rank that the test reads."""
import gc
import os
import sys

import numpy as np

import libdsm

MB16 = 16_000_000 // 8          # float64 elements of a 16 MB array


def temporaries(dsm, how):
    """50 temporary 16 MB arrays in a 64 MiB region: each starts zeroed."""
    dirty = 0
    for i in range(50):
        if how == "with":
            with dsm.array(MB16) as tmp:
                dirty += int(np.count_nonzero(tmp[dsm.row_block(MB16, 8)]))
                tmp[dsm.row_block(MB16, 8)] = i + 1
        else:
            tmp = dsm.array(MB16)
            dirty += int(np.count_nonzero(tmp[dsm.row_block(MB16, 8)]))
            tmp[dsm.row_block(MB16, 8)] = i + 1
            dsm.barrier()
            total = float(tmp[::4096].sum())
            assert total == (i + 1) * len(range(0, MB16, 4096)), total
            if how == "free":
                dsm.free(tmp)
    print("temporaries %s passes=50 dirty=%d" % (how, dirty))


def kept_by_one(dsm):
    """An array one rank still holds is not freed; once every rank has
    dropped it, the next array() frees it."""
    a = dsm.array(MB16)
    view = a[10:20] if dsm.rank == dsm.size - 1 else None     # the last rank keeps a view
    del a
    gc.collect()
    b = dsm.array(1)
    kept = dsm._heap.usage()[0] < dsm.nbytes - 16_000_000
    del view, b
    gc.collect()
    dsm.array(1)
    freed = dsm._heap.usage()[0] > dsm.nbytes - 16_000_000
    print("kept_by_one kept=%d freed=%d" % (kept, freed))


def one_rank_free(dsm):
    """The old way, free on rank 0 only: an error that says what to do."""
    a = dsm.array(1000)
    try:
        if dsm.rank == 0:
            dsm.free(a)
        else:
            dsm.barrier()
    except libdsm.CollectiveError as e:
        print("one_rank_free error: %s" % e)
    else:
        print("one_rank_free NO ERROR")


def saving(dsm, where):
    """Rank 1 writes an array; rank 0, holding none of its pages, saves it."""
    a = dsm.array((300, 1000), "float64")
    b = dsm.array((50, 700), "int32", pad_rows=True)          # strided rows
    if dsm.rank == dsm.size - 1:
        a[:] = np.arange(a.size).reshape(a.shape)
        b[:] = np.arange(b.size).reshape(b.shape)
    dsm.barrier()
    if dsm.rank == 0:
        np.save(os.path.join(where, "a.npy"), a)
        with open(os.path.join(where, "file.npy"), "wb") as f:
            np.save(f, a)
        a.tofile(os.path.join(where, "a.raw"))
        a[100:200].tofile(os.path.join(where, "slice.raw"))
        np.save(os.path.join(where, "strided.npy"), a[::7, 3:])      # plain ndarray views
        a[:, 5].tofile(os.path.join(where, "column.raw"))
        np.savez(os.path.join(where, "ab.npz"), a=a, b=b)
        np.save(os.path.join(where, "b.npy"), b)
        if os.environ.get("DSM_CONSISTENCY") != "release":
            with dsm.pinned(a):                 # pinned already: tofile does not pin again
                np.save(os.path.join(where, "pinned.npy"), a)
        print("saving done")
    dsm.barrier()


def main():
    scenario = sys.argv[1]
    with libdsm.init() as dsm:
        if scenario == "saving":
            saving(dsm, sys.argv[2])
        elif scenario.startswith("temporaries_"):
            temporaries(dsm, scenario.split("_", 1)[1])
        else:
            {"kept_by_one": kept_by_one, "one_rank_free": one_rank_free}[scenario](dsm)


if __name__ == "__main__":
    main()
