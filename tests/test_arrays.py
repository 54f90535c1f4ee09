"""Arrays that fit numpy code: Region as a buffer, unmapping by a view,
row_block's warning, pad_rows on real ranks."""
import collections
import os
import threading
import warnings

import numpy as np
import pytest

from dsmrun import ROOT, run
from libdsm import layout
from libdsm.memory import Memory
from libdsm.partitions import Partitions

pytestmark = pytest.mark.timeout(120)
PAGE = 4096


@pytest.fixture
def regions():
    memory = Memory(0x7000_0000, memoryview(bytearray(64 * PAGE)), PAGE)
    locks = collections.defaultdict(threading.Lock)
    return layout.open_system_area(memoryview(bytearray(layout.SYS_BYTES)), memory,
                                   locks.__getitem__, rank=0)[1]


def test_memoryview_and_asarray_of_a_region_are_its_bytes(regions):
    regions.create("r", 3 * PAGE)
    region = regions.map("r")
    view = memoryview(region)
    assert (view.format, view.nbytes, view.readonly) == ("B", 3 * PAGE, False)
    view[:4] = b"abcd"
    arr = np.asarray(region)
    assert type(arr) is np.ndarray and bytes(arr[:4]) == b"abcd"
    arr[4] = 7
    assert bytes(region.mem[:5]) == b"abcd\x07"
    assert type(region[1:3]) is np.ndarray and type(region + 1) is np.ndarray
    other = regions.map("r")
    assert region and region is not other and len({region, other}) == 2
    assert {region: 1}[region] == 1
    assert "Region 'r'" in repr(region)


def test_a_region_compares_elementwise_like_a_uint8_array(regions):
    regions.create("z", 2 * PAGE)
    region = regions.map("z")
    eq = region == 0
    assert type(eq) is np.ndarray and eq.shape == (2 * PAGE,) and eq.dtype == bool
    assert np.all(region == 0) and not np.any(region != 0)
    region[5] = 3
    assert np.flatnonzero(region != 0).tolist() == [5]
    assert np.all(region == regions.map("z"))           # the same bytes, another mapping
    assert (region < 1).sum() == 2 * PAGE - 1


@pytest.mark.parametrize("how", ["region", "memoryview", "slice", "array"])
def test_unmap_takes_the_region_or_a_view_of_it(regions, how):
    regions.create("r", 2 * PAGE)
    region = regions.map("r")
    obj = {"region": region, "memoryview": memoryview(region),
           "slice": memoryview(region)[PAGE:], "array": region.array("int64")[10:]}[how]
    regions.unmap(obj)
    assert not region.mapped and regions.maps(region.shmid) == 0
    with pytest.raises(ValueError, match="not a region, or a view of one"):
        regions.unmap(obj)


def test_unmap_refuses_a_view_of_something_else(regions):
    with pytest.raises(ValueError, match="not a region"):
        regions.unmap(memoryview(bytearray(10)))


def test_row_block_warns_when_ranks_would_share_a_page():
    two = Partitions(0, ["a", "b"], PAGE)
    with pytest.warns(RuntimeWarning, match=r"rows of 4104 bytes .* share a page.*pad_rows"):
        two.row_block(1000, 513 * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert two.row_block(1024, 1024 * 8) == slice(0, 512)
        assert two.row_block(1000, 8192) == slice(0, 500)       # a padded row stride
        assert two.row_block(1024, 64) == slice(0, 512)        # 64 rows fill a page


def test_padded_rows_start_on_pages_and_keep_ranks_apart(tmp_path):
    prog = os.path.join(ROOT, "tests", "arrays_prog.py")
    p = run(tmp_path, 2, prog)
    assert p.returncode == 0, p.stderr
    assert "[rank 0] padded ok" in p.stdout and "[rank 1] padded ok" in p.stdout, p.stdout
    assert "[rank 0] region buffer ok" in p.stdout, p.stdout


def test_non_contiguous_slices_are_plain_so_numpy_reuses_temporaries():
    import tracemalloc

    from libdsm.arrays import SharedArray
    u = np.arange(512 * 512, dtype="float64").reshape(512, 512).view(SharedArray)
    assert type(u[1:3]) is SharedArray and type(u[0]) is SharedArray    # contiguous: pinning tofile
    assert type(u[1:3, 1:]) is np.ndarray and type(u[:, 0]) is np.ndarray
    assert type(u[::2]) is np.ndarray and type(u.T[1:3]) is np.ndarray
    temp = 510 * 510 * 8
    tracemalloc.start()
    try:
        v = 0.25 * (u[1:-1, :-2] + u[1:-1, 2:] + u[:-2, 1:-1] + u[2:, 1:-1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(v) is np.ndarray
    assert peak < 1.5 * temp, "each + allocated a temporary: %d bytes at peak" % peak
    w = np.asarray(u)
    assert np.array_equal(v, 0.25 * (w[1:-1, :-2] + w[1:-1, 2:] + w[:-2, 1:-1] + w[2:, 1:-1]))
