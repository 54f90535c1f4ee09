"""The connections between ranks: exactly one authenticated connection per
pair of direct peers.

The structure (`leaders`): the ranks of a host connect to the host's
leader, its lowest rank, and the leaders connect to each other; any other
pair talks through the leaders (the C core's route.h).  A host then opens
about (hosts + its ranks) connections, not one per pair of ranks; with one
rank per host it is the full mesh.  Hosts are host keys: with DSM_SHARE=host
or DSM_VHOSTS > 1, libdsm.hostshare.host_keys; otherwise each rank counts as
a host of its own (per-rank mode, at most MAX_RANK_COPIES ranks).

Rank i connects to every direct peer below it and accepts one connection
from every direct peer above it.  Each connection starts with the job handshake and an
exchange of the region layout (services/meshwire.py: MeshHandshake), so ranks
that were configured differently fail at init instead of corrupting memory.

The accepting side runs every incoming handshake at once in a small poll
loop, each within wire.HANDSHAKE_TIMEOUT: a stranger that is wrong, slow or
silent is closed and logged while the mesh goes on waiting for its peers.
Running out of file descriptors while accepting (strangers hold them) is a
stall, not a failure: the listener rests for a back-off (or until the first
handshake under way expires and frees its descriptor), then accepts again.
"""
import errno
import resource
import select
import socket
import sys
import time

from libdsm_services import meshwire, wire
from libdsm import hostshare
from libdsm.errors import ConfigError, DsmError, PeerError

MAX_RANKS = 1024
"""The most ranks of a job: the C core's DSM_MAX_RANKS (csrc/ground.h)."""
MAX_RANK_COPIES = 64
"""... of a job where every rank keeps its own copy of each page (share='rank'): the
core's copysets are 64-bit masks of ranks (DSM_MAX_RANK_COPIES)."""

OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
"""accept() errors that mean "no descriptor or buffer now": wait, then accept again."""
FD_MARGIN, FD_MIN = 256, 16
"""Descriptors a rank wants, and needs at least, besides its connections (the region,
the program's files)."""
BACKOFF = (0.05, 1.0)
"""The listener's first and longest rest, in seconds, after running out of descriptors."""


def check_size(leaders, share):
    """Refuse a job of more ranks, or copies of the memory, than the core allows
    (ConfigError): MAX_RANKS ranks, and MAX_RANK_COPIES hosts, each rank counting
    as a host of its own in per-rank mode (the copysets are 64-bit masks)."""
    size = len(leaders)
    if size > MAX_RANKS:
        raise ConfigError("%d ranks: a job has at most %d" % (size, MAX_RANKS))
    if share == "rank" and size > MAX_RANK_COPIES:
        raise ConfigError("%d ranks: a job where every rank keeps its own copy of each page "
                          "(share='rank', the default) has at most %d, as the copysets are "
                          "64-bit masks of ranks; share memory per host (DSM_SHARE=host) for "
                          "up to %d" % (size, MAX_RANK_COPIES, MAX_RANKS))
    if len(set(leaders)) > MAX_RANK_COPIES:
        raise ConfigError("%d hosts: a job has at most %d, as the copysets are 64-bit masks "
                          "of hosts" % (len(set(leaders)), MAX_RANK_COPIES))


def structure(hostnames, share, vhosts):
    """Every rank's host leader: the lowest rank of its host key (DSM_SHARE=host or
    DSM_VHOSTS > 1), or itself (per-rank mode: each rank counts as a host)."""
    if share != "host" and vhosts == 1:
        return list(range(len(hostnames)))
    first = {}
    return [first.setdefault(key, r)
            for r, key in enumerate(hostshare.host_keys(hostnames, vhosts))]


def direct(leaders, a, b):
    """Do ranks a and b hold a connection to each other (route.h's route_direct)?"""
    return a != b and ((leaders[a] == a and leaders[b] == b) or leaders[a] == b
                       or leaders[b] == a)


def next_hop(leaders, a, d):
    """Where rank a sends a message for rank d (route.h's route_next)."""
    if direct(leaders, a, d):
        return d
    return leaders[a] if leaders[a] != a else leaders[d]


def make_room(rank, connections):
    """Raise this process's soft limit on open files (ulimit -n) towards its
    connections and FD_MARGIN more, as far as the hard limit allows: a leader
    of 1,000 ranks holds 1,000 sockets, past the usual soft limit of 1,024.
    ConfigError when the hard limit cannot hold the connections and FD_MIN more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < connections + FD_MIN:
        raise ConfigError("rank %d holds %d connections (it leads its host's ranks), but may "
                          "open only %d files (ulimit -Hn): raise the hard limit to %d or more"
                          % (rank, connections, hard, connections + FD_MARGIN), rank)
    want = connections + FD_MARGIN
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _connect(ctx, peer, layout, timeout):
    host, port = ctx.table[peer]
    try:
        sock = wire.connect(host, port, timeout)
    except OSError as e:
        raise PeerError("cannot connect to rank %d at %s:%d: %s" % (peer, host, port, e),
                        ctx.rank) from None

    def check_peer(ident):
        if ident != peer:
            raise PeerError("expected rank %d at %s:%d, found rank %d" % (peer, host, port, ident),
                            ctx.rank)
    try:
        meshwire.MeshHandshake(ctx.secret, wire.ROLE_CONNECT, ctx.rank, layout, check_peer).run(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class _Acceptor:
    """The accepting side: the listener and the handshakes under way (fd -> wire.Incoming)."""

    def __init__(self, ctx, socks, layout, leaders):
        self.ctx, self.socks, self.layout, self.leaders = ctx, socks, layout, leaders
        self.pending = {}
        self.poll = select.poll()
        self.poll.register(ctx.listener, select.POLLIN)
        self.rest_until = None      # while out of descriptors: when to accept again
        self.rest, self.rested_with = 0.0, 0    # the last rest (0 after an accept); pending then
        ctx.listener.setblocking(False)

    def missing(self):
        return [r for r in range(self.ctx.rank + 1, self.ctx.size)
                if self.socks[r] is None and direct(self.leaders, self.ctx.rank, r)]

    def wait(self, deadline):
        """Handle what happens until the next deadline (ours or a handshake's)."""
        now = time.monotonic()
        for inc in [i for i in self.pending.values() if i.expired(now)]:
            self._drop(inc, inc.timeout_error())
        if self.rest_until is not None and (now >= self.rest_until
                                            or len(self.pending) < self.rested_with):
            self.poll.register(self.ctx.listener, select.POLLIN)     # accept again
            self.rest_until = None
        until = min([deadline] + [i.deadline for i in self.pending.values()]
                    + ([self.rest_until] if self.rest_until is not None else []))
        for fd, _ in self.poll.poll(max(0.0, until - now) * 1000):
            if fd == self.ctx.listener.fileno():
                self._accept()
            elif fd in self.pending:
                self._advance(self.pending[fd])

    def _accept(self):
        try:
            sock, addr = self.ctx.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in OUT_OF_FDS:
                raise
            self._rest(e)
            return
        self.rest = 0.0
        exchange = meshwire.MeshHandshake(self.ctx.secret, wire.ROLE_ACCEPT, self.ctx.rank,
                                      self.layout, self._check_peer)
        try:
            inc = wire.Incoming(sock, addr, exchange)
        except wire.HandshakeError as e:
            self._refuse(sock, addr, e)
            return
        self.pending[inc.fileno()] = inc
        self.poll.register(inc.fileno(), select.POLLIN)

    def _rest(self, error):
        """Out of descriptors: stop polling the listener (the connection waits in its
        backlog) for a back-off that doubles up to BACKOFF[1], or until a handshake under
        way ends and frees its descriptor.  Said once per stall."""
        if not self.rest:
            sys.stderr.write("libdsm: rank %d: out of file descriptors while accepting (%s, "
                             "%d handshakes under way): waiting for some to close\n"
                             % (self.ctx.rank, error.strerror, len(self.pending)))
        self.rest = min(self.rest * 2, BACKOFF[1]) if self.rest else BACKOFF[0]
        self.poll.unregister(self.ctx.listener)
        self.rest_until, self.rested_with = time.monotonic() + self.rest, len(self.pending)

    def _check_peer(self, ident):
        if not self.ctx.rank < ident < self.ctx.size or self.socks[ident] is not None:
            raise wire.HandshakeError("unexpected connection claiming rank %d" % ident)
        if not direct(self.leaders, self.ctx.rank, ident):
            raise wire.HandshakeError("rank %d connected, but it reaches this rank through the "
                                      "host leaders: give every rank the same DSM_SHARE and "
                                      "DSM_VHOSTS" % ident)

    def _advance(self, inc):
        try:
            if not inc.on_readable():
                return
            self._check_peer(inc.exchange.peer[0])
        except wire.HandshakeError as e:
            self._drop(inc, e)
            return
        self._forget(inc)
        inc.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks[inc.exchange.peer[0]] = inc.sock

    def _drop(self, inc, error):
        """A stranger: closed and logged, once; the mesh goes on waiting for its peers."""
        self._forget(inc)
        self._refuse(inc.sock, inc.addr, error)

    def _refuse(self, sock, addr, error):
        sock.close()
        sys.stderr.write("libdsm: rank %d: refused a connection from %s:%d: %s\n"
                         % (self.ctx.rank, addr[0], addr[1], error))

    def _forget(self, inc):
        self.poll.unregister(inc.fileno())
        del self.pending[inc.fileno()]

    def close(self):
        for inc in list(self.pending.values()):
            self._forget(inc)
            inc.sock.close()


def _accept_all(ctx, socks, layout, leaders, timeout):
    """Accept every direct peer above us within timeout seconds."""
    deadline = time.monotonic() + timeout
    acceptor = _Acceptor(ctx, socks, layout, leaders)
    try:
        while acceptor.missing():
            if time.monotonic() >= deadline:
                raise PeerError("ranks %s did not connect within %.0f s"
                                % (acceptor.missing(), timeout), ctx.rank)
            acceptor.wait(deadline)
    finally:
        acceptor.close()


def build(ctx, layout, timeout, leaders=None):
    """Return a list of file descriptors, one per rank: the connection to each
    direct peer in the structure of `leaders` (default: the full mesh), None for
    ourselves and the ranks reached through the leaders.

    The sockets are detached: the C core owns the descriptors from here on.
    """
    leaders = list(range(ctx.size)) if leaders is None else leaders
    make_room(ctx.rank, sum(direct(leaders, ctx.rank, r) for r in range(ctx.size)))
    socks = [None] * ctx.size
    try:
        for peer in range(ctx.rank):
            if direct(leaders, ctx.rank, peer):
                socks[peer] = _connect(ctx, peer, layout, timeout)
        _accept_all(ctx, socks, layout, leaders, timeout)
    except BaseException as e:
        for s in socks:
            if s is not None:
                s.close()
        if isinstance(e, meshwire.LayoutMismatch):
            raise ConfigError(str(e)) from None
        if isinstance(e, (OSError, wire.WireError)) and not isinstance(e, DsmError):
            raise PeerError("building connections: %s" % e, ctx.rank) from None
        raise
    ctx.listener.close()
    return [None if s is None else s.detach() for s in socks]
