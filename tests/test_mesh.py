"""The mesh (libdsm/mesh.py) in one process: ranks are threads, strangers are test sockets."""
import os
import socket
import threading

import pytest

from libdsm import mesh
from libdsm.errors import ConfigError
from services import rank as bootstrap
from services import wire

pytestmark = pytest.mark.timeout(60)
LAYOUT = (1 << 26, 0x200000000000, 4, 4096)


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


def build_all(ctxs, layouts=None, timeout=10.0, before=None):
    """mesh.build on every context at once (rank 0 first, then `before()`, then the
    others); {rank: fds or exception}."""
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
        t.join(timeout + 10)
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
