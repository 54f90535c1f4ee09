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
LAYOUT = (1 << 26, 0x200000000000, 4, 4096, 2 << 16 | 3)


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


def build_all(ctxs, layouts=None, timeout=3600.0, before=None):
    """mesh.build on every context at once (rank 0 first, then `before()`, then the
    others); {rank: fds or exception}.  The mesh's own `timeout` is not what these tests
    are about: by default it lies past the test's, which bounds the wait."""
    out = {}

    def one(ctx):
        try:
            out[ctx.rank] = mesh.build(ctx, (layouts or {}).get(ctx.rank, LAYOUT), timeout)
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
