"""Named regions, the System V interface and partition info, under real
ranks."""
import os

import pytest

from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(150)
PROG = os.path.join(ROOT, "tests", "regions_prog.py")


@pytest.mark.parametrize("n", [2, 4])
def test_create_race_has_exactly_one_winner(tmp_path, n):
    p = run(tmp_path, n, PROG, "race")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "race won")
    assert len(got) == n
    assert sum(int(t.split()[1][len("won="):]) for t in got.values()) == 1
    assert all(t.endswith("total_wins=1") for t in got.values())


@pytest.mark.parametrize("n", [2, 4])
def test_lifecycle_map_count_destroy_reuse(tmp_path, n):
    p = run(tmp_path, n, PROG, "lifecycle")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "lifecycle")
    assert len(got) == n
    for r, text in got.items():
        assert text.startswith("lifecycle seen=1 count=%d same_address=1 hidden=1 reused=1 "
                               "free_back=1" % (2 * n)), text
    assert got[n - 1].endswith("destroy_freed_now=0")     # others still mapped it


@pytest.mark.parametrize("n", [2, 4])
def test_region_errors(tmp_path, n):
    p = run(tmp_path, n, PROG, "errors")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "errors")
    assert len(got) == n
    for text in got.values():
        assert text == ("errors FileExistsError FileNotFoundError OutOfSpaceError ValueError "
                        "ValueError FileNotFoundError")


@pytest.mark.parametrize("n", [2, 4])
def test_sysv_interface(tmp_path, n):
    p = run(tmp_path, n, PROG, "sysv_flags")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "sysv")
    assert len(got) == n
    for text in got.values():
        assert text == ("sysv EEXIST ENOENT EINVAL ENOMEM EINVAL private_distinct=1 "
                        "stat=8192,%d,0 owner=1 key_kept=ok EINVAL removed=ENOENT" % n)


def test_partition_info(tmp_path):
    p = run(tmp_path, 4, PROG, "partitions")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "partitions")
    for r in range(4):
        assert got[r] == ("partitions id=%d count=4 list=[0, 1, 2, 3] "
                          "hosts=localhost,localhost,localhost,localhost" % r)


@pytest.mark.parametrize("n", [2, 4])
def test_named_array_is_shared(tmp_path, n):
    p = run(tmp_path, n, PROG, "named_array")
    assert p.returncode == 0, p.stderr
    expected = 512 * sum(max(r + 1 for r in range(n) if r % 4 == row)
                         for row in range(min(n, 4)))
    got = rank_lines(p.stdout, "named_array")
    assert len(got) == n and all(t == "named_array sum=%d" % expected for t in got.values())


@pytest.mark.parametrize("n", [2, 4])
def test_named_regions_example(tmp_path, n):
    p = run(tmp_path, n, os.path.join(ROOT, "examples", "named_regions.py"), "20000")
    assert p.returncode == 0, p.stderr
    assert len(rank_lines(p.stdout, "holds 20000 values: ok")) == n - 1
    assert "WRONG" not in p.stdout
