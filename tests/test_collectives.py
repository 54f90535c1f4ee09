"""allreduce, reduce, gather and allgather on real ranks, against numpy;
mismatched calls fail on every rank instead of hanging."""
import pytest

from dsmrun import DSM_PROG, rank_lines, run

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_collectives_match_numpy_and_mismatches_fail_everywhere(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "collectives")
    assert p.returncode == 0, p.stderr
    assert sorted(rank_lines(p.stdout, "collectives bad=0")) == list(range(n)), p.stdout
    for what, text in (("err shape", "passed different shapes or types to allreduce(op=sum)"),
                       ("err op", "ranks called different collectives"),
                       ("err kind", "ranks called different collectives"),
                       ("err dtype", "reduce takes numbers or arrays of")):
        got = rank_lines(p.stdout, what)
        assert sorted(got) == list(range(n)), p.stdout
        assert all(text in line for line in got.values()), got
    assert sorted(rank_lines(p.stdout, "after errors sum=%d" % n)) == list(range(n))
