"""Collectives and locks of a job on one host through its shared memory
(DSM_SHARE=host; libdsm/csrc/hostcoll.c and hostlock.c): the same results
as per-rank mode, bit for bit, with no message sent; ranks that call
different collectives are told so, as in per-rank mode; a rank that dies
inside one ends the job, named.  On two virtual hosts (DSM_VHOSTS=2,
sequential mode) the collectives run in two levels, within each host
through its memory and between the hosts' leaders over their connections:
the same results, errors and failures, and no message from the others;
but a large reduce, which runs among all the ranks once the two levels
checked that every rank called it."""
import os
import re

import pytest

from dsmrun import ROOT, rank_lines, run
from libdsm import hostshare
from test_hostshm import by_rank

PROG = os.path.join(ROOT, "tests", "hostshm_prog.py")
pytestmark = pytest.mark.timeout(200)


def both(tmp_path, n, *args, env=None):
    """stdout of the program run in per-rank and in host-shared mode, by mode."""
    outs = {}
    for share in ("rank", "host"):
        p = run(tmp_path, n, PROG, *args, env=dict(env or {}, DSM_SHARE=share))
        assert p.returncode == 0, p.stderr
        outs[share] = p.stdout
    return outs


def results(out):
    """Each rank's result lines ("coll NAME HASH"), by rank."""
    return {r: [line for line in lines if " coll " in line]
            for r, lines in by_rank(out).items() if r is not None}


@pytest.mark.parametrize("consistency", ["sequential", "release"])
def test_every_collective_gives_per_rank_modes_bits_and_sends_nothing(tmp_path, consistency):
    outs = both(tmp_path, 3, "colls", env={"DSM_CONSISTENCY": consistency})
    got = results(outs["host"])
    assert got == results(outs["rank"])
    assert sorted(got) == [0, 1, 2] and all(len(lines) == 20 for lines in got.values()), got
    # the sums do depend on the order: only the same order gives the same bits
    assert set(rank_lines(outs["host"], "order matters").values()) == {"order matters True"}
    assert rank_lines(outs["host"], "msgs sent") == {r: "msgs sent 0" for r in range(3)}
    assert set(rank_lines(outs["rank"], "msgs sent").values()) != {"msgs sent 0"}


def leaders(n, vhosts):
    """The hosts' leaders (their lowest ranks) of n ranks on vhosts virtual hosts."""
    keys = hostshare.host_keys(["localhost"] * n, int(vhosts))
    return {keys.index(k) for k in keys}


# on 2 virtual hosts, 3 ranks: hosts of ranks 0-1 and 2; 5 ranks: 0-2 and
# 3-4; on 3, 3 ranks: one each; 5 ranks: 0-1, 2-3 and 4 (neither the hosts
# nor the job a power of two, so per-rank mode's order of combining crosses
# the hosts); the small collectives gathered by the leaders, the large
# reduces (2.4 MB a rank) run among all the ranks
@pytest.mark.parametrize("n,vhosts", [(3, "2"), (5, "2"), (3, "3"), (5, "3")])
def test_collectives_across_virtual_hosts_give_per_rank_modes_bits(tmp_path, n, vhosts):
    ref = run(tmp_path, n, PROG, "colls", env={"DSM_SHARE": "rank"})
    p = run(tmp_path, n, PROG, "colls", env={"DSM_SHARE": "host", "DSM_VHOSTS": vhosts})
    assert ref.returncode == 0 and p.returncode == 0, ref.stderr + p.stderr
    got = results(p.stdout)
    assert got == results(ref.stdout)
    assert sorted(got) == list(range(n)) and all(len(v) == 20 for v in got.values()), got
    if n == 3:
        assert set(rank_lines(p.stdout, "order matters").values()) == {"order matters True"}
    # only the hosts' leaders send: the others meet them in shared memory
    lead = leaders(n, vhosts)
    sent = {r: int(t.split()[-1]) for r, t in rank_lines(p.stdout, "msgs sent").items()}
    assert sorted(sent) == list(range(n)), p.stdout
    assert all(sent[r] == 0 for r in set(sent) - lead), sent
    assert all(sent[r] > 0 for r in lead), sent
    # but in the large reduces (2.4 MB a rank), every rank is in the tree
    large = {r: int(t.split()[-1])
             for r, t in rank_lines(p.stdout, "large reduces sent").items()}
    assert sorted(large) == list(range(n)) and all(large.values()), large


# large reduces (and one rank below the size where they run among all the
# ranks) that disagree: every rank fails as in per-rank mode, and goes on
@pytest.mark.parametrize("n,vhosts", [(3, "2"), (5, "2"), (5, "3")])
def test_large_reduces_that_disagree_fail_as_per_rank_across_hosts(tmp_path, n, vhosts):
    outs = both(tmp_path, n, "bigmismatch", env={"DSM_VHOSTS": vhosts})
    got = {share: {r: [line for line in lines if "] mismatch " in line]
                   for r, lines in by_rank(out).items() if r is not None}
           for share, out in outs.items()}
    assert got["host"] == got["rank"]
    assert sorted(got["host"]) == list(range(n)), outs["host"]
    assert all(len(lines) == 5 and all("CollectiveError" in line for line in lines)
               for lines in got["host"].values()), got["host"]
    assert rank_lines(outs["host"], "after") == {r: "after %r" % (
        float(sum(range(n))) + n) for r in range(n)}


@pytest.mark.parametrize("n", [2, 4])
def test_locked_increments_from_two_threads_a_rank_are_exact(tmp_path, n):
    p = run(tmp_path, n, PROG, "locks", "200", env={"DSM_SHARE": "host"})
    assert p.returncode == 0, p.stderr
    assert set(rank_lines(p.stdout, "count").values()) == {
        "count %d expected %d" % (400 * n, 400 * n)}


def test_try_timeout_and_release_by_a_non_holder_as_per_rank_with_no_message(tmp_path):
    outs = both(tmp_path, 3, "trylock")
    for needle in ("while held", "when free", "LockError"):
        assert rank_lines(outs["host"], needle) == rank_lines(outs["rank"], needle), needle
    assert rank_lines(outs["host"], "while held") == {1: "while held False False True"}
    assert rank_lines(outs["host"], "LockError") == {
        1: "LockError: rank 1 on host localhost: lock 7 is not held by rank 1"}
    assert rank_lines(outs["host"], "msgs sent") == {r: "msgs sent 0" for r in range(3)}


# on 2 virtual hosts (ranks 0-1 and 2): within host 0 and between the hosts
@pytest.mark.parametrize("vhosts", ["1", "2"])
def test_ranks_calling_different_collectives_all_get_per_rank_modes_error(tmp_path, vhosts):
    outs = both(tmp_path, 3, "mismatch", env={"DSM_VHOSTS": vhosts})
    errors = rank_lines(outs["host"], "CollectiveError")
    assert errors == rank_lines(outs["rank"], "CollectiveError")
    assert sorted(errors) == [0, 1, 2]
    for text in errors.values():
        assert re.search(r"ranks called different collectives: rank 0 called barrier\(\) at "
                         r"hostshm_prog.py:\d+; rank 1 called bcast\(root=1\) at "
                         r"hostshm_prog.py:\d+; rank 2 called allreduce\(op='max'\)", text), text
    # the next collective that agrees goes on
    assert set(rank_lines(outs["host"], "after").values()) == {"after 3"}


# 2 ranks on 2 virtual hosts: rank 1 waits among the leaders; 3 ranks on
# 2 (0-1, 2): rank 1 waits for its leader, rank 0, and rank 2 finalizes
# too (so either may be named, in both modes)
@pytest.mark.parametrize("n,vhosts", [(2, "1"), (2, "2"), (3, "2")])
def test_a_collective_while_another_rank_finalizes_fails_as_per_rank(tmp_path, n, vhosts):
    got = {}
    for share in ("rank", "host"):
        p = run(tmp_path, n, PROG, "finalizing", env={"DSM_SHARE": share, "DSM_VHOSTS": vhosts})
        assert p.returncode == 3, p.stderr
        got[share] = rank_lines(p.stdout, "CollectiveError")
        assert sorted(got[share]) == [1], p.stdout
        assert re.fullmatch(r"CollectiveError: rank 1 on host localhost: rank 1 called "
                            r"bcast\(root=1\) at hostshm_prog.py:\d+ while rank %s was "
                            r"finalizing" % ("0" if n == 2 else "[02]"), got[share][1]), got
    if n == 2:
        assert got["host"] == got["rank"]


# a large allreduce: across hosts it runs among all the ranks, after the
# two levels checked that every rank called it
@pytest.mark.parametrize("vhosts", ["1", "2"])
def test_a_large_allreduce_while_another_rank_finalizes_fails_as_per_rank(tmp_path, vhosts):
    got = {}
    for share in ("rank", "host"):
        p = run(tmp_path, 2, PROG, "finalizing", "big",
                env={"DSM_SHARE": share, "DSM_VHOSTS": vhosts})
        assert p.returncode == 3, p.stderr
        got[share] = rank_lines(p.stdout, "CollectiveError")
        assert re.fullmatch(r"CollectiveError: rank 1 on host localhost: rank 1 called "
                            r"allreduce\(op='sum'\) at hostshm_prog.py:\d+ while rank 0 was "
                            r"finalizing", got[share].get(1, "")), got
    assert got["host"] == got["rank"]


# one host; and two virtual hosts (ranks 0-1 and 2), where rank 2 waits
# among the hosts' leaders, rank 0 for rank 1 in shared memory
# ("page": rank 1 mapped a page the others then write, so that its leader
# must lower rank 1's mapping before the page can go; "event": the others
# wait for an Event that rank 1 would set, on one host in their mailboxes;
# "waiter": rank 1 dies waiting on the Event that the others then set)
@pytest.mark.parametrize("vhosts", ["1", "2"])
@pytest.mark.parametrize("where", ["barrier", "bcast", "lock", "page", "event", "waiter"])
def test_a_rank_killed_while_others_wait_for_it_ends_the_job_named(tmp_path, where, vhosts):
    p = run(tmp_path, 3, PROG, "diecoll", where,
            env={"DSM_SHARE": "host", "DSM_HEARTBEAT_S": "0", "DSM_VHOSTS": vhosts})
    assert p.returncode == 137, p.stderr
    rank_1_named(p, r"killed by signal 9")


# rank 1 stops inside a barrier, or while the others wait on an Event: the
# heartbeat finds it
@pytest.mark.parametrize("vhosts", ["1", "2"])
@pytest.mark.parametrize("where", ["barrier", "event"])
def test_a_rank_stopped_while_others_wait_for_it_is_declared_dead_named(tmp_path, where,
                                                                        vhosts):
    p = run(tmp_path, 3, PROG, "diecoll", where, "stop",
            env={"DSM_SHARE": "host", "DSM_HEARTBEAT_S": "2", "DSM_VHOSTS": vhosts})
    assert p.returncode != 0, p.stderr
    rank_1_named(p, r"declared dead by rank 0")


def rank_1_named(p, verdict):
    """dsmexec's verdict on rank 1 says `verdict`; every rank that said why
    it failed names rank 1, and none went on."""
    assert re.search(r"^dsmexec: rank 1 \(host localhost.*" + verdict, p.stderr, re.M), \
        p.stderr
    assert "survived" not in p.stdout
    lines = rank_lines(p.stdout, "PeerError peer=")
    assert lines and all(text.startswith("PeerError peer=1:") for text in lines.values()), \
        p.stdout + p.stderr
