"""Who and where without ranks: hosts, row blocks, lock numbering."""
import pytest

from libdsm.locks import Locks
from libdsm.partitions import Partitions

pytestmark = pytest.mark.timeout(30)
PAGE = 4096


def test_hostnames_by_rank():
    p = Partitions(1, ["a", "b", "a"], PAGE)
    assert (p.size, p.hostname(), p.hostname(2), p.hostnames()) == (3, "b", "a", ["a", "b", "a"])
    with pytest.raises(ValueError, match="rank 3 out of range 0..2"):
        p.hostname(3)


def test_row_blocks_start_on_pages_and_cover_every_row():
    p = Partitions(0, ["h"] * 3, PAGE)
    blocks = [p.row_block(5000, 24, r) for r in range(3)]
    assert blocks[0].start == 0 and blocks[-1].stop == 5000
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    assert all(b.start * 24 % PAGE == 0 for b in blocks)


def test_too_few_rows_for_pages_are_split_evenly_with_a_warning():
    p = Partitions(0, ["h"] * 4, PAGE)
    with pytest.warns(RuntimeWarning, match="share a page"):
        assert [p.row_block(8, 8, r) for r in range(4)] == [slice(0, 2), slice(2, 4),
                                                            slice(4, 6), slice(6, 8)]


def test_user_locks_are_checked_and_system_locks_come_after():
    locks = Locks(10, 4)
    assert locks.user(5) is locks.user(5)
    assert (locks.user(5).home, locks.system(0).index, locks.system(3).home) == (1, 10, 1)
    for bad in (10, -1, 1.5):
        with pytest.raises(ValueError, match="out of range 0..9"):
            locks.user(bad)
    assert locks.user("1").name == "1" and 8 <= locks.user("1").index <= 9   # by name
