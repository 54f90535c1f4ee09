"""Page placement (dsm.place, dsm.array(homes=...)) under real ranks: a
rank's own rows homed at it cost it no write fault, data survives its
homes moving, and bad requests are typed errors; with DSM_SHARE=host on 2
virtual hosts (HOSTS) the same at the hosts' leaders."""
import re

import pytest

from dsmrun import ROOT, rank_lines, run, run_code

pytestmark = pytest.mark.timeout(90)
PROG = ROOT + "/tests/placement_prog.py"
HOSTS = {"DSM_SHARE": "host", "DSM_VHOSTS": "2", "DSM_SIZE": "64M", "DSM_HEARTBEAT_S": "0"}
LEADER = {0: 0, 1: 0, 2: 2, 3: 2}      # 2 virtual hosts x 2 ranks


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


@pytest.mark.parametrize("other", ["first_touch", "barrier"])
@pytest.mark.parametrize("n,env", [(3, None), (4, HOSTS)])
def test_ranks_asking_for_different_placements_get_a_collective_error(tmp_path, n, env, other):
    """Rank 0 places by row_block, the others by first_touch or not at all
    (a barrier): across hosts the barrier runs in two levels and the
    placement among all the ranks, and the mismatch is still found."""
    p = run(tmp_path, n, PROG, "mismatch", other, env=env)
    assert p.returncode == 0, p.stderr
    assert rank_lines(p.stdout, "mismatch CollectiveError").keys() == set(range(n)), p.stdout
    assert rank_lines(p.stdout, "mismatch then barrier ok").keys() == set(range(n)), p.stdout


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



def count_lines(out):
    """{rank: {section: {stat: delta}}, plus own_homes, mine, total} of `counts` lines."""
    got = {}
    for rank, line in rank_lines(out, "counts ").items():
        head, fill, place, reread, read, sums = line.split(" | ")
        got[rank] = {"own_homes": re.search(r"own_homes=(\[[\d, ]*\])", head).group(1),
                     "sums": sums}
        for part in (fill, place, reread, read):
            name, *pairs = part.split()
            got[rank][name] = {k: int(v) for k, v in (p.split("=") for p in pairs)}
    return got


def test_across_two_hosts_pages_are_homed_by_the_leader_of_the_host_that_uses_them(tmp_path):
    """DSM_SHARE=host on 2 virtual hosts x 2 ranks, 400 padded rows of 8 KiB
    (800 pages, 200 per rank).  Round-robin homes: each rank's fill faults
    on the 100 pages homed by the other host's leader.  row_block: each
    rank's rows are homed by its host's leader, which took them before the
    fill: the fill costs no fault and no message at all,
    the leader's pages already here, the other rank's a local hit each
    (host_maps).  first_touch after the fill: the 400 pages homed by the
    other host's leader move home without a page sent, every rank's table
    switched.  The sums are per-rank mode's."""
    got = {}
    for homes in ("none", "row_block", "first_touch"):
        p = run(tmp_path, 4, PROG, "counts", "400", "1024", homes, env=HOSTS)
        assert p.returncode == 0, p.stderr
        got[homes] = count_lines(p.stdout)
        assert sorted(got[homes]) == [0, 1, 2, 3], p.stdout
    per_rank = run(tmp_path, 4, PROG, "counts", "400", "1024", "first_touch",
                   env={"DSM_SIZE": "64M", "DSM_HEARTBEAT_S": "0"})
    assert per_rank.returncode == 0, per_rank.stderr
    ref = count_lines(per_rank.stdout)
    for r in range(4):
        assert ref[r]["own_homes"] == "[%d]" % r, ref
        assert got["none"][r]["own_homes"] == "[0, 2]", got["none"]
        assert got["none"][r]["fill"]["write_faults"] == 100, got["none"]
        for homes in ("row_block", "first_touch"):
            assert got[homes][r]["own_homes"] == "[%d]" % LEADER[r], got[homes]
            assert got[homes][r]["reread"]["msgs_sent"] == 0, got[homes]
        for homes in got:
            assert got[homes][r]["sums"] == ref[r]["sums"], (got[homes], ref)
        row = got["row_block"][r]
        assert row["fill"]["write_faults"] == row["fill"]["msgs_sent"] == 0, row
        assert row["fill"]["host_maps"] == (0 if LEADER[r] == r else 200), row
        first = got["first_touch"][r]
        assert first["place"]["homes_moved"] == 400 and first["place"]["pages_sent"] == 0, first
    for leader in (0, 2):
        assert got["none"][leader]["fill"]["msgs_sent"] > 100, got["none"]


def test_across_three_hosts_a_read_of_placed_pages_asks_the_host_that_holds_them(tmp_path):
    """3 virtual hosts x 2 ranks, 600 padded rows of 8 KiB (1,200 pages):
    after the fill rank 0 reads every row, faulting on the 800 pages the
    other hosts hold, one at a time (DSM_READAHEAD=1).  Placed first_touch,
    each page's home is the leader holding it: one message of rank 0's a
    fault (its DSM_REQ; the page comes straight back).  Round-robin, a
    third of those pages are homed by the host that does not hold them:
    the home forwards the request and rank 0 confirms the page to it
    (DSM_UPDATE), a second message of its own."""
    env = dict(HOSTS, DSM_VHOSTS="3", DSM_READAHEAD="1")
    got = {}
    for homes in ("none", "first_touch"):
        p = run(tmp_path, 6, PROG, "counts", "600", "1024", homes, env=env)
        assert p.returncode == 0, p.stderr
        got[homes] = count_lines(p.stdout)
        assert sorted(got[homes]) == list(range(6)), p.stdout
        assert got[homes][0]["read"]["read_faults"] == 800, got[homes][0]
    placed, rr = got["first_touch"][0]["read"], got["none"][0]["read"]
    assert placed["msgs_sent"] == 800, placed
    assert rr["msgs_sent"] > 800 + 200, rr
    assert got["first_touch"][0]["sums"] == got["none"][0]["sums"], got


@pytest.mark.parametrize("consistency", ["sequential", "release"])
def test_across_two_hosts_data_written_by_one_rank_reads_back_after_its_homes_move(
        tmp_path, consistency):
    """Rank 0 writes every row; row_block then moves each rank's rows to its
    host's leader, taking the other host's rows from host 0 (through the
    leaders, host 0's other rank lowered): every rank reads the data
    back, and after its own writes every row.  In release mode across
    hosts a placement moves no home, but homes follow the single writing
    host at each barrier: rank 0's host for the rows it wrote alone
    (row_block's), each host's own rows (first_touch's); the data as right."""
    p = run(tmp_path, 4, PROG, "rehome", "600", "1024",
            env=dict(HOSTS, DSM_CONSISTENCY=consistency))
    assert p.returncode == 0, p.stderr
    for how in ("row_block", "first_touch"):
        got = rank_lines(p.stdout, "rehome %s " % how)
        assert sorted(got) == [0, 1, 2, 3], p.stdout
        for r, line in got.items():
            homes = "[%d]" % (0 if consistency == "release" and how == "row_block"
                              else LEADER[r])
            assert line.startswith("rehome %s before=1 after=1 own_homes=%s "
                                   % (how, homes)), p.stdout


def test_across_two_hosts_a_placement_at_a_rank_that_leads_no_host_is_refused(tmp_path):
    p = run(tmp_path, 4, PROG, "not_leader", env=HOSTS)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "not_leader ConfigError")
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    assert all("home 1 is not a host's leader" in line for line in got.values()), p.stdout
    assert set(rank_lines(p.stdout, "not_leader then home").values()) == \
        {"not_leader then home kept"}, p.stdout
