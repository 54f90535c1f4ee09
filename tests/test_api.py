"""The programming model (barrier, malloc, bcast, locks, arrays) under real
ranks, with its error cases."""
import re

import pytest

from dsmrun import DSM_PROG, rank_lines, run

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("n", [2, 4])
def test_bcast_from_every_root(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "bcast_values")
    assert p.returncode == 0, p.stderr
    assert len(rank_lines(p.stdout, "bcast_values ok=1")) == n, p.stdout


@pytest.mark.parametrize("n", [2, 4])
def test_malloc_from_all_ranks_never_overlaps(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "malloc_disjoint", "--rounds", "40")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "malloc_disjoint")
    assert len(got) == n
    for text in got.values():
        assert text == "malloc_disjoint n=%d overlap=0 misaligned=0 wrong=0 whole=1" % (40 * n)


@pytest.mark.parametrize("n", [2, 4])
def test_lock_protected_invariant_under_contention(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "lock_invariant", "--rounds", "150")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "lock_invariant")
    assert len(got) == n
    for text in got.values():
        assert text == "lock_invariant a=%d expected=%d broken=0" % (150 * n, 150 * n)


@pytest.mark.parametrize("n", [2, 4])
def test_api_error_cases(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "api_errors")
    assert p.returncode == 0, p.stderr
    for r in range(n):
        lines = {m.group(1): m.group(2) for m in re.finditer(
            r"^\[rank %d\] err ([\w ]+): (.*)$" % r, p.stdout, re.M)}
        assert lines["release"].endswith("lock 2 is not held by rank %d" % r)
        assert "out of range" in lines["lock range"]
        assert lines["exhausted"].startswith("cannot allocate")
        assert "power of two" in lines["align"]
        assert lines["root"] == "bcast root %d out of range 0..%d" % (n, n - 1)
        assert "rank 0 called barrier() at dsm_prog.py:" in lines["mismatch"]
        assert "called bcast(root=0) at dsm_prog.py:" in lines["mismatch"]
        assert "not allocated" in lines["free"]
        assert "array(): rank 1 asked for (4, 5) <i4 (row stride 20), rank 0 for (4, 4) <i4" \
            in lines["array"]                   # every rank, rank 0 too


def test_the_public_calls_carry_type_hints():
    import inspect
    import typing

    import numpy as np

    import libdsm
    typed = {libdsm.Dsm: [
        "array", "free", "malloc", "prefetch", "place", "pinned", "save", "write", "readinto",
        "row_block", "create_region", "map_region", "unmap_region", "destroy_region", "regions",
        "hostname", "page_of", "page_home", "page_access", "hot_pages", "stats",
        "segment_owner", "partition_id", "partition_count", "partition_list",
        "partition_hostnames", "barrier", "allreduce", "reduce", "scan", "exscan",
        "reduce_scatter", "scatter", "alltoall", "gather", "allgather", "bcast", "finalize",
        "checkpoint", "lock", "condition", "event", "semaphore", "__enter__", "__exit__"],
        libdsm.Lock: ["acquire", "release", "locked", "held_by_me", "__enter__", "__exit__"],
        libdsm.Condition: ["acquire", "release", "wait", "wait_for", "notify", "notify_all",
                           "__enter__", "__exit__"],
        libdsm.Event: ["is_set", "set", "clear", "wait"],
        libdsm.Semaphore: ["acquire", "release", "__enter__", "__exit__"]}
    public = {n for n, f in vars(libdsm.Dsm).items() if callable(f) and not n.startswith("_")}
    assert public <= set(typed[libdsm.Dsm]), public - set(typed[libdsm.Dsm])
    for cls, names in typed.items():
        for name in names:
            fn = getattr(cls, name)
            hints = typing.get_type_hints(fn)
            params = set(inspect.signature(fn).parameters) - {"self"}
            assert "return" in hints and params <= set(hints), (cls.__name__, name)
    assert typing.get_type_hints(libdsm.Condition.value.fget)["return"] is int
    assert typing.get_type_hints(libdsm.Dsm.array)["return"] is libdsm.SharedArray
    assert issubclass(libdsm.SharedArray, np.ndarray)
    assert typing.get_type_hints(libdsm.Dsm.map_region)["return"] is libdsm.Region
    assert typing.get_type_hints(libdsm.Dsm.lock)["return"] is libdsm.Lock
    assert typing.get_type_hints(libdsm.Lock.acquire) == {
        "blocking": bool, "timeout": float, "return": bool}
    assert typing.get_type_hints(libdsm.Allocation) == {"offset": int, "nbytes": int}
    assert typing.get_type_hints(libdsm.init)["return"] is libdsm.Dsm
