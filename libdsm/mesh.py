"""The full mesh: exactly one authenticated connection per pair of ranks.

Rank i connects to every rank below it and accepts one connection from
every rank above it.  Each connection starts with the job handshake
(services/wire.py) and then an exchange of the region layout, so ranks that
were configured differently fail at init instead of corrupting memory.
"""
import socket
import sys

from services import wire
from libdsm.errors import ConfigError, DsmError, PeerError


def _exchange_layout(sock, layout, peer):
    """The layout exchange of services/wire.py, a mismatch as ConfigError."""
    try:
        wire.exchange_layout(sock, layout, peer)
    except wire.LayoutMismatch as e:
        raise ConfigError(str(e)) from None


def _connect(ctx, peer, layout, timeout):
    host, port = ctx.table[peer]
    try:
        sock = wire.connect(host, port, timeout)
    except OSError as e:
        raise PeerError("cannot connect to rank %d at %s:%d: %s" % (peer, host, port, e),
                        ctx.rank) from None
    try:
        ident, _ = wire.handshake(sock, ctx.secret, wire.ROLE_CONNECT, ctx.rank)
        if ident != peer:
            raise PeerError("expected rank %d at %s:%d, found rank %d" % (peer, host, port, ident),
                            ctx.rank)
        _exchange_layout(sock, layout, peer)
    except BaseException:
        sock.close()
        raise
    return sock


def _accept(ctx, socks, layout, timeout):
    ctx.listener.settimeout(timeout)
    try:
        sock, addr = ctx.listener.accept()
    except socket.timeout:
        missing = [r for r in range(ctx.rank + 1, ctx.size) if socks[r] is None]
        raise PeerError("ranks %s did not connect within %.0f s" % (missing, timeout),
                        ctx.rank) from None
    sock.settimeout(timeout)
    try:
        peer, _ = wire.handshake(sock, ctx.secret, wire.ROLE_ACCEPT, ctx.rank)
        if not ctx.rank < peer < ctx.size or socks[peer] is not None:
            raise wire.HandshakeError("unexpected connection claiming rank %d" % peer)
        _exchange_layout(sock, layout, peer)
    except wire.HandshakeError as e:
        sock.close()
        # a stranger is refused; the mesh goes on waiting for the real peer
        sys.stderr.write("libdsm: rank %d: refused a connection from %s: %s\n"
                         % (ctx.rank, addr[0], e))
        return
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks[peer] = sock


def build(ctx, layout, timeout):
    """Return a list of file descriptors, one per rank (None for ourselves).

    The sockets are detached: the C core owns the descriptors from here on.
    """
    socks = [None] * ctx.size
    try:
        for peer in range(ctx.rank):
            socks[peer] = _connect(ctx, peer, layout, timeout)
        while any(s is None for s in socks[ctx.rank + 1:]):
            _accept(ctx, socks, layout, timeout)
    except BaseException as e:
        for s in socks:
            if s is not None:
                s.close()
        if isinstance(e, (OSError, wire.WireError)) and not isinstance(e, DsmError):
            raise PeerError("building connections: %s" % e, ctx.rank) from None
        raise
    ctx.listener.close()
    return [None if s is None else s.detach() for s in socks]
