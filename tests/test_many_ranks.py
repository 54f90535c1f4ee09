"""Many ranks on this machine, oversubscribed: the ranks of a (virtual) host
reach the others through its leader (libdsm/mesh.py, csrc/route.c).

  - 48 ranks on 3 virtual hosts, each rank its own copy (per-rank mode, at
    most 64 ranks): barriers, a bcast, an allreduce, a lock;
  - 96 ranks sharing one host's memory (DSM_SHARE=host): the same;
  - 96 ranks on 3 virtual hosts sharing memory per host, and 128 on 2: a
    host of 64 ranks has ranks beyond the bits of a page's word, which
    share its HOST_OVERFLOW bit (libdsm/csrc/hostmem.h);
  - 65 ranks in per-rank mode: refused at init, saying why;
  - a non-leader killed or stopped, or a leader killed, in a job of 3
    virtual hosts of 4 ranks: every rank names it, not a leader;
  - the C core's routes over random structures (tests/sim/simcommroute.c).

Each rank prints its connections as the core counts them and as sockets in
/proc/self/fd, checked against the structure."""
import os
import re
import subprocess

import pytest

from dsmrun import ROOT, rank_lines, run
from libdsm import mesh

PROG = os.path.join(ROOT, "tests", "many_prog.py")
CSRC = os.path.join(ROOT, "libdsm", "csrc")
FAIL = os.path.join(ROOT, "tests", "failure_prog.py")
SMALL = {"DSM_SIZE": "8M"}


def expected(n, share, vhosts):
    """Each rank's connections in the structure: {rank: count}."""
    leaders = mesh.structure(["localhost"] * n, share, vhosts)
    return {r: sum(mesh.direct(leaders, r, q) for q in range(n)) for r in range(n)}, leaders


def check_job(p, n, share, vhosts):
    assert p.returncode == 0, p.stderr[-3000:]
    assert rank_lines(p.stdout, "ok") == {r: "ok" for r in range(n)}, p.stdout[-3000:]
    want, leaders = expected(n, share, vhosts)
    got = rank_lines(p.stdout, "connections")
    assert set(got) == set(range(n))
    for r, line in got.items():
        conns, socks, forwarded = map(int, re.fullmatch(
            r"connections (\d+) sockets (\d+) forwarded (\d+)", line).groups())
        assert conns == socks == want[r], (r, line, want[r])
        leads = any(leaders[q] == r for q in range(n) if q != r)
        assert (forwarded > 0) == leads, (r, line)       # only leaders pass messages on
    return leaders


@pytest.mark.timeout(300)
def test_48_ranks_on_3_virtual_hosts_each_rank_its_own_copy(tmp_path):
    p = run(tmp_path, 48, PROG, "work", env=dict(SMALL, DSM_VHOSTS="3"))
    leaders = check_job(p, 48, "rank", 3)
    assert sorted(set(leaders)) == [0, 16, 32]
    # a leader: its 15 ranks and 2 leaders; the others: their leader only
    assert "[rank 16] connections 17 sockets 17" in p.stdout
    assert "[rank 17] connections 1 sockets 1 forwarded 0" in p.stdout


@pytest.mark.timeout(300)
def test_96_ranks_sharing_one_hosts_memory(tmp_path):
    p = run(tmp_path, 96, PROG, "work", env=dict(SMALL, DSM_SHARE="host"))
    check_job(p, 96, "host", 1)
    assert "[rank 0] connections 95 sockets 95" in p.stdout


@pytest.mark.timeout(300)
def test_96_ranks_on_3_virtual_hosts_sharing_memory_per_host(tmp_path):
    # the protocol between the 3 leaders (0, 32 and 64: copysets name hosts,
    # not ranks), the lock-protected counter's page going from host to host
    p = run(tmp_path, 96, PROG, "work", env=dict(SMALL, DSM_SHARE="host", DSM_VHOSTS="3"))
    leaders = check_job(p, 96, "host", 3)
    assert sorted(set(leaders)) == [0, 32, 64]


@pytest.mark.timeout(300)
def test_128_ranks_on_2_virtual_hosts_more_than_the_bits_of_a_pages_word(tmp_path):
    # each host's ranks 61-63 (by their place on it) have no bit of their own
    # in a page's word: they map the counter's page under HOST_OVERFLOW, and
    # each is asked to lower it when the page leaves its host or the other
    # host reads it (the counter checked at the end), so each counts an
    # invalidation; before, a host of more than 61 ranks was refused
    bits = int(re.search(r"#define DSM_HOST_RANK_BITS (\d+)",
                         open(os.path.join(CSRC, "hostmem.h")).read()).group(1))
    assert bits < 63
    p = run(tmp_path, 128, PROG, "work", env=dict(SMALL, DSM_SHARE="host", DSM_VHOSTS="2"))
    leaders = check_job(p, 128, "host", 2)
    assert sorted(set(leaders)) == [0, 64]
    invs = {r: int(text.split()[1]) for r, text in rank_lines(p.stdout, "invalidations").items()}
    beyond = [r for r in range(128) if r % 64 > bits]
    assert beyond and all(invs[r] > 0 for r in beyond), (beyond, invs)


@pytest.mark.timeout(120)
def test_ranks_on_distinct_hosts_keep_the_full_mesh(tmp_path):
    p = run(tmp_path, 4, PROG, "work", env=SMALL)
    check_job(p, 4, "rank", 1)
    assert rank_lines(p.stdout, "connections") == {
        r: "connections 3 sockets 3 forwarded 0" for r in range(4)}


@pytest.mark.timeout(300)
def test_65_ranks_of_their_own_copies_are_refused_saying_why(tmp_path):
    p = run(tmp_path, 65, PROG, "work", env=SMALL)
    assert p.returncode == 1, p.stderr[-3000:]
    said = rank_lines(p.stdout + p.stderr, "ConfigError")
    assert said, p.stderr[-3000:]
    for text in said.values():
        assert "65 ranks: a job where every rank keeps its own copy of each page (share='rank', " \
               "the default) has at most 64" in text and "DSM_SHARE=host" in text, text
    assert "[rank 0] ok" not in p.stdout


def fail_rank(tmp_path, scenario, rank, heartbeat_s, status):
    """A rank of 3 virtual hosts of 4 fails (failure_prog.py): rank 5's only
    connection is to its leader, rank 4, which leads ranks 5-7 and connects to
    the leaders 0 and 8.  The job's status must be `status`; returns the job
    and dsmexec's first verdict."""
    p = run(tmp_path, 12, FAIL, scenario, "--rank", str(rank),
            env=dict(SMALL, DSM_VHOSTS="3", DSM_HEARTBEAT_S=str(heartbeat_s)))
    assert p.returncode == status, p.stderr[-3000:]
    assert "survived" not in p.stdout
    verdict = re.findall(r"^dsmexec: (rank \d+ .*)$", p.stderr, re.M)
    assert verdict, p.stderr[-3000:]
    return p, verdict[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rank", [5, 4])          # behind its leader; a leader
def test_a_killed_rank_is_named_by_every_rank(tmp_path, rank):
    p, verdict = fail_rank(tmp_path, "kill", rank, 0, 137)
    assert verdict.startswith("rank %d (host localhost, line %d) was killed by signal 9 "
                              "(SIGKILL)" % (rank, rank + 1)), verdict
    got = rank_lines(p.stdout, "PeerError peer")
    assert got and set(got) <= set(range(12)) - {rank}, p.stdout
    assert got == {r: "PeerError peer=%d rank=%d" % (rank, r) for r in got}, p.stdout
    assert set(got) - {4, 5, 6, 7}, p.stdout  # ranks of other hosts, told by their leaders


@pytest.mark.timeout(120)
def test_a_stopped_rank_behind_its_leader_is_declared_dead_by_it(tmp_path):
    # the others fault on pages rank 5 is home of, through the leaders
    p, verdict = fail_rank(tmp_path, "stop", 5, 2, 1)
    assert re.fullmatch(r"rank 5 \(host localhost, line 6\) declared dead by rank 4: rank 5 sent "
                        r"nothing for [\d.]+ s: declared dead; killed it", verdict), verdict
    fatal = re.findall(r"^\[rank (\d+)\] libdsm: rank \d+: fatal: page \d+ needed, but (.*)$",
                       p.stdout + p.stderr, re.M)
    assert fatal, p.stderr[-3000:]
    for rank, why in fatal:
        assert why.startswith("rank 5 sent nothing for"), (rank, why)


@pytest.mark.timeout(120)
def test_the_cores_routes_over_ten_thousand_random_structures(tmp_path):
    exe = str(tmp_path / "simcommroute")
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
                    "-I" + CSRC, "-o", exe, os.path.join(ROOT, "tests", "sim", "simcommroute.c"),
                    os.path.join(CSRC, "route.c"), os.path.join(CSRC, "ground.c"), "-pthread"],
                   check=True)
    p = subprocess.run([exe, "--seeds", "0:10000"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == "passed 10000 seeds\n", p.stdout
