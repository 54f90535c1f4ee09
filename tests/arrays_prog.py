"""Padded arrays and Region buffers on real ranks (tests/test_arrays.py)."""
import warnings

import numpy as np

import libdsm

warnings.simplefilter("error")          # row_block must not warn on a padded array

with libdsm.init() as dsm:
    ps = dsm.page_size
    arr = dsm.array((1000, 513), "float64", pad_rows=True)
    assert arr.strides[0] % ps == 0 and arr.strides[0] >= 513 * 8, arr.strides
    start = arr.__array_interface__["data"][0]
    assert all((start + i * arr.strides[0]) % ps == 0 for i in range(1000))
    rows = dsm.row_block(1000, arr.strides[0])
    before = dsm.stats()["write_faults"]
    arr[rows] = dsm.rank + 1
    faults = dsm.stats()["write_faults"] - before
    dsm.barrier()
    total = float(arr.sum())
    assert total == 513 * sum(r + 1 for r in range(dsm.size)
                              for _ in range(*dsm.row_block(1000, arr.strides[0], r).indices(1000)))
    assert dsm.hot_pages() == [] or max(n for _, n in dsm.hot_pages()) <= 1, dsm.hot_pages()
    print("padded ok (%d write faults)" % faults)
    dsm.barrier()
    if dsm.rank == 0:
        dsm.create_region("buf", 10000)
    dsm.barrier()
    region = dsm.map_region("buf")
    if dsm.rank == 1:
        memoryview(region)[:5] = b"hello"
    dsm.barrier()
    if dsm.rank == 0:
        assert bytes(np.asarray(region)[:5]) == b"hello"
        print("region buffer ok")
    dsm.unmap_region(memoryview(region)[100:])
    dsm.barrier()
    if dsm.rank == 0:
        dsm.destroy_region("buf")
    dsm.free(arr)                   # collective: every rank frees it
