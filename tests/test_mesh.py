"""The mesh (libdsm/mesh.py) in one process: ranks are threads, strangers are test sockets."""
import os
import socket
import threading

import pytest

from libdsm import mesh
from libdsm.errors import ConfigError, PeerError
from libdsm_services import rank as bootstrap
from libdsm_services import wire

pytestmark = pytest.mark.timeout(60)
LAYOUT = (1 << 26, 0x200000000000, 4, 4096, 2 << 16 | 4, 0, 1)


def contexts(n, secret=None):
    """n rank Contexts on 127.0.0.1, each with its listener (no dsmexec connection)."""
    secret = secret or wire.new_secret()
    listeners = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        listeners.append(s)
    table = [("127.0.0.1", s.getsockname()[1]) for s in listeners]
    return [bootstrap.Context(r, n, table, ["localhost"] * n, secret, None, listeners[r])
            for r in range(n)]


def build_all(ctxs, layouts=None, timeout=3600.0, before=None, leaders=None):
    """mesh.build on every context at once (rank 0 first, then `before()`, then the
    others); {rank: fds or exception}.  The mesh's own `timeout` is not what these tests
    are about: by default it lies past the test's, which bounds the wait."""
    out = {}

    def one(ctx):
        try:
            out[ctx.rank] = mesh.build(ctx, (layouts or {}).get(ctx.rank, LAYOUT), timeout,
                                       (leaders or {}).get(ctx.rank))
        except Exception as e:
            out[ctx.rank] = e

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in ctxs]
    threads[0].start()
    if before:
        before()
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    for fds in out.values():
        if isinstance(fds, list):
            for fd in fds:
                if fd is not None:
                    os.fstat(fd)            # a descriptor, open
                    os.close(fd)
    for c in ctxs:
        c.listener.close()
    return out


def test_three_ranks_connect():
    out = build_all(contexts(3))
    assert all(isinstance(fds, list) and len(fds) == 3 for fds in out.values()), out


def test_a_layout_mismatch_is_a_config_error_naming_both_values():
    out = build_all(contexts(2), layouts={1: (1 << 27,) + LAYOUT[1:]})
    for rank, other in ((0, 1), (1, 0)):
        assert isinstance(out[rank], ConfigError), out
    assert "region size differs: this rank has 0x4000000, rank 1 has 0x8000000" in str(out[0])


def test_strangers_of_every_kind_are_dropped_and_the_real_peer_still_connects(capfd):
    from strangers import Strangers, wait_dropped
    ctxs = contexts(3)
    with Strangers() as s:
        def attack():       # rank 0 is accepting; every kind, at both accepting ranks
            at_rank0 = s.all_kinds(ctxs[0].table[0])
            s.all_kinds(ctxs[1].table[1])
            wait_dropped(at_rank0)      # before its peers come: the mesh went on waiting
        out = build_all(ctxs, before=attack)
    assert all(isinstance(fds, list) for fds in out.values()), out
    err = capfd.readouterr().err
    assert err.count("libdsm: rank 0: refused a connection from 127.0.0.1:") == 3, err
    assert "timed out after 2 s waiting for handshake hello (got 0 of 26 bytes)" in err
    assert "bad magic b'GET '" in err


def test_the_overall_timeout_still_applies_to_the_real_peers():
    ctxs = contexts(2)
    result = {}

    def rank0():
        try:
            result[0] = mesh.build(ctxs[0], LAYOUT, 1.0)
        except Exception as e:
            result[0] = e
    t = threading.Thread(target=rank0)
    t.start()
    t.join()                # rank 1 never comes: only the mesh's own clock ends the wait
    for c in ctxs:
        c.listener.close()
    assert isinstance(result[0], PeerError)
    assert "ranks [1] did not connect within 1 s" in str(result[0])


def test_fuzzing_the_listener_while_the_mesh_waits(capfd):
    from strangers import fuzz
    ctxs = contexts(2)
    report = {}

    def attack():
        report["fuzz"] = fuzz([ctxs[0].table[0]], 500)     # each one closed by rank 0
    out = build_all(ctxs, before=attack)
    seed, made = report["fuzz"]
    assert all(isinstance(fds, list) for fds in out.values()), (seed, out)
    assert made == 500, seed
    assert capfd.readouterr().err.count("refused a connection") >= 400, seed


# ---------------------------------------------------------------- the structure


def test_per_rank_mode_is_the_full_mesh_and_host_keys_make_leaders():
    hosts = ["a"] * 4 + ["b"] * 2
    assert mesh.structure(hosts, "rank", 1) == list(range(6))
    assert mesh.structure(hosts, "host", 1) == [0, 0, 0, 0, 4, 4]
    assert mesh.structure(hosts, "rank", 2) == [0, 0, 2, 2, 4, 5]    # a#0 a#1 b#0 b#1
    assert mesh.structure(["a", "b", "c"], "host", 1) == [0, 1, 2]   # one rank per host


@pytest.mark.parametrize("hosts, per_host", [(4, 256), (3, 32), (32, 32), (64, 1), (5, 7)])
def test_connections_grow_with_hosts_and_routes_are_fixed_and_symmetric(hosts, per_host):
    n = hosts * per_host
    leaders = mesh.structure(["h%d" % (r // per_host) for r in range(n)], "host", 1)
    links = {(a, b) for a in range(n) for b in range(n) if mesh.direct(leaders, a, b)}
    assert all((b, a) in links for a, b in links)
    for host in range(hosts):       # a host's connections: its own ranks', out of it too
        mine = range(host * per_host, (host + 1) * per_host)
        opened = {frozenset(link) for link in links if link[0] in mine}
        assert len(opened) <= (per_host - 1) + (hosts - 1)
        assert len(opened) <= hosts * per_host
    if per_host == 1:
        assert len(links) == n * (n - 1)                 # the full mesh of hosts
    for a in range(0, n, max(1, n // 40)):
        for d in range(0, n, max(1, n // 40)):
            if a == d:
                continue
            path, at = [a], a
            while at != d:
                at = mesh.next_hop(leaders, at, d)
                assert (path[-1], at) in links
                path.append(at)
            assert len(path) <= 4                        # a, its leader, d's leader, d
            assert set(path[1:-1]) <= {leaders[a], leaders[d]}
            back, at = [d], d
            while at != a:
                at = mesh.next_hop(leaders, at, a)
                back.append(at)
            assert back == path[::-1]                    # the way back is the same route


def test_more_than_64_ranks_need_host_sharing_and_at_most_64_hosts():
    def leaders(n, per_host):
        return mesh.structure(["h%d" % (r // per_host) for r in range(n)], "host", 1)
    with pytest.raises(ConfigError, match=r"65 ranks: a job where every rank keeps its own copy "
                                          r"of each page \(share='rank', the default\) has at "
                                          r"most 64.*DSM_SHARE=host"):
        mesh.check_size(list(range(65)), "rank")
    with pytest.raises(ConfigError, match=r"65 ranks: a job where every rank"):
        mesh.check_size(leaders(65, 5), "rank")         # DSM_VHOSTS: still a copy per rank
    mesh.check_size(list(range(64)), "rank")
    mesh.check_size(leaders(1024, 16), "host")          # 64 hosts of 16
    with pytest.raises(ConfigError, match="65 hosts: a job has at most 64, as the copysets are "
                                          "64-bit masks of hosts"):
        mesh.check_size(leaders(130, 2), "host")
    with pytest.raises(ConfigError, match="1025 ranks: a job has at most 1024"):
        mesh.check_size(leaders(1025, 1025), "host")


def test_ranks_connect_to_their_leader_and_the_leaders_to_each_other():
    ctxs = contexts(7)
    leaders = [0, 0, 0, 3, 3, 3, 6]
    out = build_all(ctxs, leaders=dict.fromkeys(range(7), leaders))
    for rank, fds in out.items():
        assert isinstance(fds, list), out
        held = [r for r, fd in enumerate(fds) if fd is not None]
        assert held == [r for r in range(7) if mesh.direct(leaders, rank, r)], (rank, held)
    assert [r for r, fd in enumerate(out[1]) if fd is not None] == [0]
    assert [r for r, fd in enumerate(out[3]) if fd is not None] == [0, 4, 5, 6]


def test_a_rank_with_another_structure_is_refused_as_it_connects(capfd):
    from libdsm_services import meshwire
    ctxs = contexts(4)
    good = [0, 0, 2, 2]             # rank 3 reaches rank 0 through rank 2

    def stray():                    # rank 3 as if every rank led its own host
        host, port = ctxs[0].table[0]
        with wire.connect(host, port, 10) as sock:
            with pytest.raises(wire.WireError):
                meshwire.MeshHandshake(ctxs[0].secret, wire.ROLE_CONNECT, 3, LAYOUT).run(sock)
    out = build_all(ctxs, before=stray, leaders=dict.fromkeys(range(4), good))
    assert all(isinstance(fds, list) for fds in out.values()), out     # the mesh went on
    err = capfd.readouterr().err
    assert "libdsm: rank 0: refused a connection from 127.0.0.1:" in err
    assert "rank 3 connected, but it reaches this rank through the host leaders: give every " \
           "rank the same DSM_SHARE and DSM_VHOSTS" in err


def test_a_leader_raises_its_open_file_limit_as_far_as_the_hard_limit(monkeypatch):
    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(mesh.resource, "getrlimit", lambda what: limits["now"])
    monkeypatch.setattr(mesh.resource, "setrlimit", lambda what, lim: limits.update(now=lim))
    mesh.make_room(0, 100)                      # fits: left as it is
    assert limits["now"] == (1024, 4096)
    mesh.make_room(0, 1023)                     # a leader of 1,024 ranks on one host
    assert limits["now"] == (1023 + mesh.FD_MARGIN, 4096)
    limits["now"] = (64, 64)
    mesh.make_room(1, 1)                        # a low limit that holds what it needs
    assert limits["now"] == (64, 64)
    limits["now"] = (1024, 1030)
    mesh.make_room(0, 1000)                     # as far as the hard limit
    assert limits["now"] == (1030, 1030)
    with pytest.raises(ConfigError, match=r"rank 3 holds 2000 connections \(it leads its host's "
                                          r"ranks\), but may open only 1030 files \(ulimit -Hn\)"):
        mesh.make_room(3, 2000)
