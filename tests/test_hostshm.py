"""Host-shared memory (DSM_SHARE=host): the ranks of one host map one
memfd, nothing faults, barriers go through the shared control area.  Every
example prints what it prints in per-rank mode; the failure, fork and
clean-up behaviour of per-rank mode stays."""
import json
import os
import re
import types

import pytest

from dsmrun import ROOT, rank_lines, run, run_code
from libdsm import hostshare

PROG = os.path.join(ROOT, "tests", "hostshm_prog.py")
HOST = {"DSM_SHARE": "host"}
pytestmark = pytest.mark.timeout(150)

EXAMPLES = {
    "share.py": [], "counter_lock.py": ["300"], "matmul.py": ["128"], "sor.py": ["96", "30"],
    "pi_ep.py": ["200000"], "row_fill.py": ["256", "512"], "histogram.py": ["5000"],
    "named_regions.py": ["5000"], "double_touch.py": [], "producer_consumer.py": [],
    "jacobi_ckpt.py": [],
}


def by_rank(out):
    """Each rank's lines, in the order it printed them (ranks interleave)."""
    got = {}
    for line in out.splitlines():
        m = re.match(r"\[rank (\d+)\] ", line)
        got.setdefault(int(m.group(1)) if m else None, []).append(line)
    return got


def test_every_example_prints_what_it_prints_with_a_copy_per_rank(tmp_path):
    assert sorted(EXAMPLES) == sorted(f for f in os.listdir(os.path.join(ROOT, "examples"))
                                      if f.endswith(".py"))
    for name, args in sorted(EXAMPLES.items()):
        prog = os.path.join(ROOT, "examples", name)
        outs = [run(tmp_path, 2, prog, *args, env={"DSM_SHARE": share})
                for share in ("rank", "host")]
        for p in outs:
            assert p.returncode == 0, (name, p.stderr)
        assert by_rank(outs[0].stdout) == by_rank(outs[1].stdout), name


# what a rank prints of its own faults, and of its share of a queue's items
SCHEDULED = re.compile(r"with \d+ write faults$|took \d+ numbers$")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("consistency", ["sequential", "release"])
def test_every_example_prints_the_same_on_two_virtual_hosts(tmp_path, consistency):
    """4 ranks on two virtual hosts of host-shared memory (the protocol
    between the hosts' leaders) print what 4 ranks of their own copies
    print, bit for bit, but for the lines that count a rank's own faults or
    its share of a queue; in either consistency mode."""
    mode = {"DSM_CONSISTENCY": consistency}
    for name, args in sorted(EXAMPLES.items()):
        prog = os.path.join(ROOT, "examples", name)
        outs = [run(tmp_path, 4, prog, *args, env=dict(env, **mode))
                for env in ({"DSM_SHARE": "rank"}, dict(HOST, DSM_VHOSTS="2"))]
        for p in outs:
            assert p.returncode == 0, (name, p.stderr)
        kept = [{r: [line for line in lines if not SCHEDULED.search(line)]
                 for r, lines in by_rank(p.stdout).items()} for p in outs]
        assert kept[0] == kept[1] and any(kept[0].values()), name


@pytest.mark.parametrize("consistency", ["sequential", "release"])
def test_every_call_works_with_no_fault_and_no_page_moved(tmp_path, consistency):
    p = run(tmp_path, 2, PROG, "calls", env=dict(HOST, DSM_CONSISTENCY=consistency))
    assert p.returncode == 0, p.stderr
    assert set(rank_lines(p.stdout, "sum ").values()) == {"sum 393216 expected 393216"}
    assert set(rank_lines(p.stdout, "placed").values()) == {"placed [0.0, 1.0]"}
    assert set(rank_lines(p.stdout, "region").values()) == {"region [10, 11]"}
    assert set(rank_lines(p.stdout, "allreduce").values()) == {"allreduce 3 bcast xxx"}
    assert set(rank_lines(p.stdout, "access").values()) == {"access ['rw']"}
    assert rank_lines(p.stdout, "faults") == {r: "faults 0 pages moved 0 twins 0"
                                              for r in (0, 1)}, p.stdout


def test_the_trace_shows_each_ranks_barriers_and_no_fault(tmp_path):
    out = tmp_path / "trace.json"
    p = run(tmp_path, 2, PROG, "where", env=HOST, opts=("--trace", str(out)))
    assert p.returncode == 0, p.stderr
    events = json.loads(out.read_text())["traceEvents"]
    assert {(e["pid"], e["name"]) for e in events} >= {(0, "barrier"), (1, "barrier")}
    assert not [e for e in events if e.get("cat") == "fault"]


def test_locked_increments_from_two_threads_a_rank_are_exact(tmp_path):
    p = run(tmp_path, 3, PROG, "locks", "300", env=HOST)
    assert p.returncode == 0, p.stderr
    assert set(rank_lines(p.stdout, "count").values()) == {"count 1800 expected 1800"}


def test_a_child_forked_after_init_is_refused_the_memory(tmp_path):
    p = run(tmp_path, 2, PROG, "fork", env=HOST)
    assert p.returncode == 0, p.stderr
    assert set(rank_lines(p.stdout, "child exit").values()) == {"child exit 1"}
    assert set(rank_lines(p.stdout, "after the child").values()) == {"a[0] after the child 0"}
    assert "forked after libdsm.init()" in p.stdout + p.stderr


def test_the_memory_is_one_memfd_and_the_hand_over_leaves_nothing(tmp_path):
    shm = set(os.listdir("/dev/shm"))
    p = run(tmp_path, 2, PROG, "where", env=HOST)
    assert p.returncode == 0, p.stderr
    assert set(rank_lines(p.stdout, "mapped from").values()) == {
        "mapped from /memfd:libdsm-host (deleted)"}
    assert set(rank_lines(p.stdout, "sockets left").values()) == {"sockets left 0"}
    assert not [n for n in set(os.listdir("/dev/shm")) - shm if "libdsm" in n]


def test_a_checkpoint_saves_each_page_once(tmp_path):
    saved = {}
    for share in ("rank", "host"):
        d = tmp_path / share
        p = run(tmp_path, 2, PROG, "ckpt",
                env={"DSM_SHARE": share, "DSM_CHECKPOINT_DIR": str(d)})
        assert p.returncode == 0, p.stderr
        saved[share] = rank_lines(p.stdout, "saved")
    assert saved["host"] == saved["rank"] and len(saved["host"]) == 2


def test_a_bad_share_is_refused_naming_the_option():
    for setting in ("os.environ['DSM_SHARE'] = 'hosts'; libdsm.init()",
                    "libdsm.init(share='node')"):
        p = run_code("import os, libdsm\n" + setting)
        assert p.returncode != 0
        assert re.search(r"ConfigError: share=/DSM_SHARE must be 'rank' or 'host', got "
                         r"'(hosts|node)'", p.stderr), p.stderr
    p = run_code("import libdsm; libdsm.init(share=1)")
    assert "share=/DSM_SHARE takes 'rank' or 'host', got int 1" in p.stderr, p.stderr


def test_release_mode_runs_on_two_hosts_of_host_shared_memory(tmp_path):
    """Release mode across hosts: two hosts of one rank, and two virtual
    hosts of two ranks, whose leaders keep the host's twins (the others
    none) and whose other ranks fault through them; a prefetch for writing
    opens the pages through the leader too."""
    for n, hosts, env in ((2, ["localhost", "127.0.0.1"], {}), (4, None, {"DSM_VHOSTS": "2"})):
        p = run(tmp_path, n, PROG, "calls", env=dict(HOST, DSM_CONSISTENCY="release", **env),
                hosts=hosts)
        assert p.returncode == 0, p.stderr
        total = sum((r + 1) * (256 // n) * 1024 for r in range(n))
        assert set(rank_lines(p.stdout, "sum ").values()) == {"sum %d expected %d"
                                                               % (total, total)}, p.stdout
        assert set(rank_lines(p.stdout, "placed").values()) == {
            "placed %s" % [float(r) for r in range(n)]}, p.stdout
        assert set(rank_lines(p.stdout, "region").values()) == {
            "region %s" % [10 + r for r in range(n)]}, p.stdout
        twins = {r: int(text.split()[-1]) for r, text in rank_lines(p.stdout, "faults").items()}
        leaders = range(0, n, n // 2)
        assert sorted(twins) == list(range(n)) and all(twins[r] > 0 for r in leaders), p.stdout
        assert all(twins[r] == 0 for r in set(range(n)) - set(leaders)), p.stdout


def test_a_host_of_more_ranks_than_the_bits_of_a_pages_word_is_taken():
    # the job's limit only (libdsm/mesh.py): ranks beyond the bits share
    # HOST_OVERFLOW (csrc/hostmem.h); tests/test_many_ranks.py runs 2 x 64
    ctx = types.SimpleNamespace(rank=1, hostnames=["a"] * 1000 + ["b"] * 24, secret=b"s" * 32)
    h = hostshare.Handover(ctx, 1 << 20, 1.0)
    assert (len(h.local), h.nhosts) == (1000, 2)


def test_alone_the_memory_is_shared_too():
    p = run_code("import libdsm\n"
                 "d = libdsm.init(size='8M', share='host')\n"
                 "a = d.array(1000, 'int64'); a[:] = 7; d.barrier()\n"
                 "print(int(a.sum()), d.stats()['write_faults'], d.page_access(0))\n"
                 "d.finalize()")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["7000", "0", "rw"]


def test_virtual_hosts_split_each_hosts_ranks_into_blocks():
    assert hostshare.host_keys(["a", "a", "b", "a", "b"], 1) == ["a", "a", "b", "a", "b"]
    assert hostshare.host_keys(["a", "a", "a", "a"], 2) == ["a#0", "a#0", "a#1", "a#1"]
    assert hostshare.host_keys(["a", "a", "b", "a", "b"], 2) == \
        ["a#0", "a#0", "b#0", "a#1", "b#1"]
    assert hostshare.host_keys(["h"] * 5, 3) == ["h#0", "h#0", "h#1", "h#1", "h#2"]


def test_more_virtual_hosts_than_ranks_on_a_host_is_refused(tmp_path):
    p = run(tmp_path, 2, PROG, "calls", env={"DSM_VHOSTS": "3"})
    assert p.returncode != 0
    assert "vhosts=/DSM_VHOSTS must be 1..2 (the ranks on this host), got 3" in p.stderr, \
        p.stderr


def test_ranks_given_different_shares_fail_at_init_naming_both(tmp_path):
    prog = tmp_path / "mixed.py"
    prog.write_text("import libdsm\n"
                    "from libdsm_services import rank\n"
                    "libdsm.init(share='host' if rank.CONTEXT.rank == 1 else 'rank')\n")
    p = run(tmp_path, 2, str(prog))
    assert p.returncode != 0
    assert re.search(r"ConfigError: the ranks share memory differently: this rank has "
                     r"DSM_SHARE=(rank|host), rank [01] has DSM_SHARE=(host|rank)", p.stderr), \
        p.stderr
