"""DSM memory touched after finalize(), or by a child forked after init():
the same clear failure on every rank, whether or not it held the pages."""
import os

import pytest

from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(120)
PROG = os.path.join(ROOT, "tests", "after_prog.py")


@pytest.mark.parametrize("culprit", [0, 1])      # 1 holds the pages, 0 does not
def test_touching_an_array_after_finalize_is_fatal_on_any_rank(tmp_path, culprit):
    p = run(tmp_path, 2, PROG, "after_finalize", str(culprit), env={"DSM_SIZE": "16M"})
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "[rank %d] libdsm: rank %d: fatal: page " % (culprit, culprit) in p.stderr, p.stderr
    assert " touched after finalize()" in p.stderr
    assert "sum after finalize" not in p.stdout, p.stdout


@pytest.mark.parametrize("culprit", [0, 1])
def test_a_child_forked_after_init_is_refused_at_once(tmp_path, culprit):
    p = run(tmp_path, 2, PROG, "forked", str(culprit), env={"DSM_SIZE": "16M"})
    assert p.returncode == 0, p.stderr
    out = rank_lines(p.stdout, "child call")
    assert out[culprit].startswith("child call: rank %d on host localhost: this process was "
                                   "forked after libdsm.init() in process " % culprit), out
    assert rank_lines(p.stdout, "child status") == {culprit: "child status 1"}, p.stdout
    assert "forked after libdsm.init() in process" in p.stderr and \
        "only the process that called init() can use DSM memory" in p.stderr, p.stderr
    assert "child sum" not in p.stdout
    assert rank_lines(p.stdout, "parent sum") == {0: "parent sum 16384", 1: "parent sum 16384"}
