"""Every scenario holds in both sharing modes: a copy per rank (the
default), and one copy per host (DSM_SHARE=host), on one host and across
two virtual hosts (DSM_VHOSTS=2: the protocol between the hosts' leaders).
The runtime's own scenarios (tests/dsm_prog.py) and the ones that name a
memory model (tests/modes_prog.py) run under each, with the same checks;
the runtime's scenarios in release mode across the two virtual hosts too."""
import os
import re

import pytest

from dsmrun import DSM_PROG, ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(300)
MODES_PROG = os.path.join(ROOT, "tests", "modes_prog.py")
MODES = {
    "rank": {"DSM_SHARE": "rank", "DSM_SIZE": "64M"},
    "host": {"DSM_SHARE": "host", "DSM_SIZE": "64M"},
    "host+vhosts=2": {"DSM_SHARE": "host", "DSM_VHOSTS": "2", "DSM_SIZE": "64M"},
}
# the runtime's scenarios are data-race-free: release mode too, across hosts
# (the hosts' leaders keep the twins and send the diffs: coh_rchost.c)
RUNTIME_MODES = dict(MODES, **{"host+vhosts=2+release": dict(MODES["host+vhosts=2"],
                                                             DSM_CONSISTENCY="release")})


@pytest.mark.parametrize("mode", sorted(RUNTIME_MODES))
@pytest.mark.parametrize("scenario,args,expect", [
    ("own_pages", [], r"own_pages bad=0"),
    ("false_sharing", ["--rounds", "40"], r"false_sharing bad=0"),
    ("mutual", ["--rounds", "60"], r"mutual pages=60 bad=0"),
    ("lock_invariant", ["--rounds", "30"], r"lock_invariant a=120 expected=120 broken=0"),
])
def test_the_runtime_scenarios(tmp_path, mode, scenario, args, expect):
    p = run(tmp_path, 4, DSM_PROG, scenario, *args, env=RUNTIME_MODES[mode])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, scenario)
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    assert all(re.search(expect, text) for text in got.values()), p.stdout


@pytest.mark.parametrize("mode", sorted(MODES))
def test_strict_alternation_counts_exactly(tmp_path, mode):
    p = run(tmp_path, 2, DSM_PROG, "alternation", "--rounds", "100", env=MODES[mode])
    assert p.returncode == 0, p.stderr
    for text in rank_lines(p.stdout, "alternation").values():
        total, expected = re.search(r"total=(\d+) expected=(\d+)", text).groups()
        assert total == expected == "200"


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("scenario,expect", [
    ("mp", "mp bad=0"),
    ("threads", "threads bad=0"),
])
def test_message_passing_and_concurrent_threads(tmp_path, mode, scenario, expect):
    p = run(tmp_path, 3, MODES_PROG, scenario, env=MODES[mode])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, scenario)
    assert sorted(got) == [0, 1, 2] and all(expect in t for t in got.values()), p.stdout


@pytest.mark.parametrize("mode", sorted(MODES))
def test_stripes_over_a_4_gib_region(tmp_path, mode):
    p = run(tmp_path, 2, MODES_PROG, "stripes", env=dict(MODES[mode], DSM_SIZE="4G"))
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "stripes")
    assert sorted(got) == [0, 1], p.stdout
    for text in got.values():
        bad, span = map(int, re.search(r"bad=(\d+) span=(\d+)", text).groups())
        assert bad == 0 and span > (4 << 30) - (8 << 20)


def test_store_buffering_is_sequentially_consistent_per_rank(tmp_path):
    # Between the ranks of one host-shared host the CPU's model (x86-TSO)
    # allows both loads to see 0 (docs/host-shared.md): only per-rank copies
    # (and, across hosts, host-shared ones) promise sequential consistency.
    p = run(tmp_path, 2, MODES_PROG, "sb", "--rounds", "100", env=MODES["rank"])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "sb forbidden")
    assert sorted(got) == [0, 1] and all("forbidden=0 rounds=100" in t for t in got.values()), \
        p.stdout


@pytest.mark.parametrize("scenario,expect", [
    ("sb", "sb forbidden=0 rounds=100"),
    ("mp", "mp bad=0"),
])
def test_litmus_across_hosts_is_sequentially_consistent(tmp_path, scenario, expect):
    # 2 virtual hosts of 2 ranks: rank 0 and the last rank are on different
    # hosts, where sequential mode keeps sequential consistency
    p = run(tmp_path, 4, MODES_PROG, scenario, "--rounds", "100", env=MODES["host+vhosts=2"])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, scenario)
    assert sorted(got) == [0, 1, 2, 3] and all(expect in t for t in got.values()), p.stdout


def counts(text):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def test_a_page_read_by_both_ranks_of_a_host_crosses_once(tmp_path):
    """Rank 0 (host 0) writes 64 pages; ranks 2 (the leader of host 1) and 3
    read them in turn.  Each page leaves rank 0 once, for one message of
    rank 2's (its DSM_REQ, or DSM_FWD for the pages it homes) and rank 0's
    DSM_PAGE; rank 3's reads are local hits: an mprotect each, no message.
    Rank 1 never touched the pages, so none was taken from it (no
    DSM_HINV).  Per rank, rank 3 fetches its own copies."""
    env = dict(DSM_READAHEAD="1", DSM_HEARTBEAT_S="0")
    got = {}
    for mode in ("rank", "host+vhosts=2"):
        p = run(tmp_path, 4, MODES_PROG, "crossing", env=dict(MODES[mode], **env))
        assert p.returncode == 0, p.stderr
        got[mode] = {r: counts(t) for r, t in rank_lines(p.stdout, "crossing").items()}
        assert sorted(got[mode]) == [0, 1, 2, 3], p.stdout
    host = got["host+vhosts=2"]
    pages = host[0]["pages"]
    assert pages >= 64 and host[2]["bad"] == host[3]["bad"] == 0
    assert host[0]["pages_sent"] == pages, host
    assert host[2]["read_faults"] == host[2]["msgs_sent"] == pages, host
    assert host[1]["invalidations"] == host[1]["host_maps"] == 0, host
    assert host[3] == dict(pages=pages, bad=0, pages_sent=0, msgs_sent=0, host_maps=pages,
                           read_faults=0, invalidations=0, host_msgs=0), host
    assert host[2]["host_msgs"] == host[0]["host_msgs"] == 0, host
    assert got["rank"][3]["read_faults"] == pages and got["rank"][3]["msgs_sent"] > 0, got
    assert got["rank"][0]["pages_sent"] > pages, got       # most pages left rank 0 twice


def test_a_miss_of_a_rank_that_is_not_its_hosts_leader(tmp_path):
    """The same pages read by rank 3 first: each of its faults asks its
    leader (DSM_HREQ, its only message, and within the host); the leader
    fetches the page once for the host, so the leader's own reads after it
    take no fault and send nothing, and each page still leaves rank 0
    once."""
    env = dict(MODES["host+vhosts=2"], DSM_READAHEAD="1", DSM_HEARTBEAT_S="0")
    p = run(tmp_path, 4, MODES_PROG, "crossing", "--last-first", env=env)
    assert p.returncode == 0, p.stderr
    got = {r: counts(t) for r, t in rank_lines(p.stdout, "crossing").items()}
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    pages = got[0]["pages"]
    assert got[2]["bad"] == got[3]["bad"] == 0, got
    assert got[0]["pages_sent"] == pages and got[1]["invalidations"] == 0, got
    assert got[3]["read_faults"] == got[3]["msgs_sent"] == got[3]["host_msgs"] == pages, got
    assert got[3]["host_maps"] == 0, got
    assert got[2]["read_faults"] == got[2]["host_maps"] == got[2]["msgs_sent"] == 0, got


def test_a_lock_names_only_the_pages_its_releasers_host_wrote(tmp_path):
    """Release mode on 2 virtual hosts x 2 ranks: rank 3 (host 1) reads the
    64 pages of an array; rank 1 (host 0, not its leader) writes rows 0 and
    1 under a lock, row 0 homed on host 0 and row 1 on host 1 (each row was
    first written by its home, so no home moved).  Rank 3 takes
    the lock until it sees the writes.  The lock's notices name only the
    pages host 0 wrote since rank 1's last release, so host 1 drops its copy
    of row 0 (and of the flag's page, if it mapped it: host 1 homes
    neither), and keeps every other page: rank 3 reads the array again with
    one fault.  Before, a rank other than its host's leader named every
    page, and host 1 dropped the 32 it does not home."""
    env = dict(MODES["host+vhosts=2"], DSM_CONSISTENCY="release", DSM_READAHEAD="1",
               DSM_BLOCK_PAGES="1", DSM_HEARTBEAT_S="0")
    p = run(tmp_path, 4, MODES_PROG, "notices", env=env)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "notices")
    assert sorted(got) == [3], p.stdout
    text = got[3]
    n = counts(text)
    assert n["pages"] == 64 and n["bad"] == 0, text
    assert re.search(r"homes=0,2,0 ", text), text
    assert n["read_faults"] == 1 and n["host_maps"] == 0 and n["invalidations"] == 0, text
    assert n["lock_read_faults"] in (1, 2) and n["lock_host_maps"] == 0, text
    # each fault after a drop (the flag's page, if mapped before, and row
    # 0's), and the lowering of row 1's page to read-only before host 1
    # first serves it to host 0 (rank 3 mapped it read/write, its home's
    # host never having served it)
    assert n["lock_invalidations"] == n["lock_read_faults"] + 1, text


@pytest.mark.parametrize("mode", ["rank", "host+vhosts=2"])
def test_a_small_twin_limit_bounds_the_twins_and_keeps_the_results(tmp_path, mode):
    """Release mode, DSM_TWIN_LIMIT=1M (256 pages): each rank writes its
    band of 4096 pages, homes alternating page by page, twice.  Per rank,
    each twins its 768 pages homed elsewhere; across 2 virtual hosts the
    leaders twin their host's 1024, and send pages home early from their
    comm thread while the writes wait.  Every rank reads the last values,
    and no rank ever kept more than 1 MiB of twins.  At the first barrier
    the homes follow their single writers (across hosts: the writing
    host's leader), so the second round twins nothing."""
    env = dict(MODES[mode], DSM_CONSISTENCY="release", DSM_TWIN_LIMIT="1M",
               DSM_BLOCK_PAGES="1")
    p = run(tmp_path, 4, MODES_PROG, "twins", env=env)
    assert p.returncode == 0, p.stderr
    got = {r: counts(t) for r, t in rank_lines(p.stdout, "twins").items()}
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    assert all(n["bad"] == 0 and n["twin_peak"] <= 1 << 20 for n in got.values()), got
    twinning, most = ([0, 2], 1024) if mode == "host+vhosts=2" else ([0, 1, 2, 3], 768)
    assert len({n["homes_moved"] for n in got.values()}) == 1, got      # every rank's table
    for r, n in got.items():
        if r in twinning:       # more twins than fit: some went home early; one round's
            assert 256 < n["twins"] <= most + 2 and n["early_flushes"] > 0, got
            assert n["twin_peak"] > 0 and n["homes_moved"] >= most, got
        else:                   # the host's leader twins for it
            assert n["twins"] == n["twin_peak"] == n["early_flushes"] == 0, got
