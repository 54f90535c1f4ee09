"""Page placement (dsm.place, dsm.array(homes=...)) under real ranks: a
rank's own rows homed at it cost it no write fault, data survives its
homes moving, and bad requests are typed errors."""
import re

import pytest

from dsmrun import ROOT, rank_lines, run, run_code

pytestmark = pytest.mark.timeout(90)
PROG = ROOT + "/tests/placement_prog.py"


def faults(out, homes):
    """{rank: (write faults, ok, own homes)} of `fill homes=...` lines."""
    got = {}
    for rank, line in rank_lines(out, "fill homes=%s " % homes).items():
        m = re.search(r"write_faults=(\d+) ok=(\d) own_homes=(\[[\d, ]*\])", line)
        got[rank] = (int(m.group(1)), m.group(2) == "1", m.group(3))
    return got


@pytest.mark.parametrize("n,cols,pad", [(2, 512, ""), (3, 512, ""), (3, 513, "pad")])
def test_a_rank_filling_its_row_block_takes_no_write_fault(tmp_path, n, cols, pad):
    rr = run(tmp_path, n, PROG, "fill", "1200", str(cols), "none", *([pad] if pad else []))
    placed = run(tmp_path, n, PROG, "fill", "1200", str(cols), "row_block",
                 *([pad] if pad else []))
    assert rr.returncode == 0 and placed.returncode == 0, rr.stderr + placed.stderr
    before, after = faults(rr.stdout, "none"), faults(placed.stdout, "row_block")
    assert sorted(after) == list(range(n)), placed.stdout
    for r in range(n):
        assert before[r][0] > 100 and before[r][1], rr.stdout      # round-robin homes
        assert after[r] == (0, True, "[%d]" % r), placed.stdout    # its own pages, here


@pytest.mark.parametrize("n", [2, 3])
def test_data_written_by_one_rank_reads_back_after_its_homes_move(tmp_path, n):
    p = run(tmp_path, n, PROG, "rehome", "600", "700")
    assert p.returncode == 0, p.stderr
    for how in ("row_block", "first_touch"):
        got = rank_lines(p.stdout, "rehome %s " % how)
        assert sorted(got) == list(range(n)), p.stdout
        for r, line in got.items():
            assert line.startswith("rehome %s before=1 after=1 own_homes=[%d] " % (how, r)), \
                p.stdout


def test_release_mode_keeps_its_own_homes_and_the_data(tmp_path):
    p = run(tmp_path, 2, PROG, "rehome", "300", "512", env={"DSM_CONSISTENCY": "release"})
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "rehome ")
    assert len(got) == 2 and all("before=1 after=1" in line for line in got.values()), p.stdout


def test_ranks_asking_for_different_placements_get_a_collective_error(tmp_path):
    p = run(tmp_path, 3, PROG, "mismatch")
    assert p.returncode == 0, p.stderr
    assert rank_lines(p.stdout, "mismatch CollectiveError").keys() == {0, 1, 2}, p.stdout
    assert rank_lines(p.stdout, "mismatch then barrier ok").keys() == {0, 1, 2}, p.stdout


def test_bad_placements_are_typed_errors():
    code = """if 1:
        import libdsm
        from libdsm import _binding
        d = libdsm.init(size=4 << 20)
        def err(f):
            try:
                f()
            except libdsm.DsmError as e:
                return "%s %s %s" % (type(e).__name__, isinstance(e, ValueError), e)
            return "no error"
        print(err(lambda: d.array((4, 4), homes="nearby")))
        print(err(lambda: d.array((4, 4), name="n", homes="row_block")))
        print(err(lambda: d.place(d.malloc(100), "row_block")))
        print(err(lambda: _binding.place(0, 1, [1])))
        a = d.array((8, 1024), homes="row_block")
        a[:] = 3
        d.place(a)
        print("placed", int(a.sum()), d.page_home(d.page_of(0)))
        d.finalize()
    """
    p = run_code(code)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == ("PlacementError True rank 0 on host localhost: homes='nearby': "
                        "expected one of 'row_block', 'first_touch', or None"), p.stdout
    assert lines[1].startswith("PlacementError True rank 0 on host localhost: "
                               "homes='row_block' is for collective arrays"), p.stdout
    assert lines[2].startswith("PlacementError True") and "needs an array" in lines[2], p.stdout
    assert lines[3] == "ConfigError True rank 0: page 0: home 1 is not a rank of 0..0", p.stdout
    assert lines[4] == "placed %d 0" % (8 * 1024 * 3), p.stdout
