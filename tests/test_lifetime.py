"""Arrays that free themselves (GC, collective free, with) and saving
them to real files, on real ranks; shape and dtype errors alone."""
import os

import numpy as np
import pytest

import libdsm
from dsmrun import ROOT, rank_lines, run, run_code

pytestmark = pytest.mark.timeout(200)
PROG = os.path.join(ROOT, "tests", "lifetime_prog.py")
SMALL = {"DSM_SIZE": "64M"}


@pytest.mark.parametrize("how", ["gc", "free", "with"])
def test_fifty_16mb_temporaries_fit_a_64mib_region(tmp_path, how):
    p = run(tmp_path, 2, PROG, "temporaries_" + how, env=SMALL)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "temporaries")
    assert got == {r: "temporaries %s passes=50 dirty=0" % how for r in range(2)}, p.stdout


@pytest.mark.parametrize("n", [2, 3])
def test_an_array_lives_while_any_rank_holds_a_view(tmp_path, n):
    p = run(tmp_path, n, PROG, "kept_by_one", env=SMALL)
    assert p.returncode == 0, p.stderr
    assert rank_lines(p.stdout, "kept_by_one") == {r: "kept_by_one kept=1 freed=1"
                                                   for r in range(n)}, p.stdout


def test_free_on_one_rank_says_free_is_collective(tmp_path):
    p = run(tmp_path, 2, PROG, "one_rank_free", env=SMALL)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "one_rank_free")
    assert "free() of an array is collective: every rank calls dsm.free(arr)" in got[0], got
    assert "error" in got[1], got


@pytest.mark.parametrize("mode", ["sequential", "release"])
def test_np_save_tofile_savez_write_whole_files_from_pages_held_elsewhere(tmp_path, mode):
    out = tmp_path / "out"
    out.mkdir()
    p = run(tmp_path, 2, PROG, "saving", str(out), env=dict(SMALL, DSM_CONSISTENCY=mode))
    assert p.returncode == 0, p.stderr
    assert "[rank 0] saving done" in p.stdout, p.stdout
    a = np.arange(300 * 1000, dtype="float64").reshape(300, 1000)
    b = np.arange(50 * 700, dtype="int32").reshape(50, 700)
    assert np.array_equal(np.load(out / "a.npy"), a)
    assert np.array_equal(np.load(out / "file.npy"), a)
    assert np.array_equal(np.fromfile(out / "a.raw", "float64").reshape(a.shape), a)
    assert np.array_equal(np.fromfile(out / "slice.raw", "float64"), a[100:200].ravel())
    assert np.array_equal(np.load(out / "strided.npy"), a[::7, 3:])
    assert np.array_equal(np.fromfile(out / "column.raw", "float64"), a[:, 5])
    with np.load(out / "ab.npz") as z:
        assert np.array_equal(z["a"], a) and np.array_equal(z["b"], b)
    assert np.array_equal(np.load(out / "b.npy"), b)
    if mode == "sequential":
        assert np.array_equal(np.load(out / "pinned.npy"), a)


BAD = """
import libdsm
dsm = libdsm.init(size="16M")
for args in [(-1,), ((3, -2),), ("3",), ((2.5,),), (4, "float128x"), (4, object), (4, "U")]:
    try:
        dsm.array(*args)
    except libdsm.ArgumentError as e:
        print(type(e).__mro__[1:3], e)
try:
    dsm.array((1 << 20, 1 << 10))
except MemoryError as e:
    print(type(e).__name__, e)
dsm.finalize()
"""


def test_bad_shapes_and_dtypes_name_the_argument():
    p = run_code(BAD)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 8, p.stdout
    assert "dsm.array(shape=-1): a dimension cannot be negative" in lines[0]
    assert "dsm.array(shape=(3, -2)): a dimension cannot be negative" in lines[1]
    assert "dsm.array(shape='3'): a shape is an int or a sequence of ints" in lines[2]
    assert "dsm.array(shape=(2.5,)): a shape is an int or a sequence of ints" in lines[3]
    assert "dsm.array(dtype='float128x'): not a numpy dtype" in lines[4]
    assert "not Python objects" in lines[5] and "not one of size 0" in lines[6]
    assert lines[7].startswith("OutOfSpaceError rank 0 on host localhost: array(shape=(1048576, "
                               "1024), dtype=float64): cannot allocate 8589934592 bytes (8 GiB")
    assert "the region has 16777216 bytes (16 MiB)" in lines[7]
    assert "raise DSM_SIZE or pass a larger size= to libdsm.init()" in lines[7]


def test_errors_are_exported():
    assert issubclass(libdsm.OutOfSpaceError, MemoryError)
    assert issubclass(libdsm.ArgumentError, ValueError)
    assert issubclass(libdsm.ArgumentError, TypeError)
