"""The master socket: where ranks register and dsmexec hands out the connection table.

Each rank connects, passes the handshake (services/wire.py, proving it
knows the job secret) and sends REGISTER {"rank", "host", "port"}: where
it listens for its peers.  Once every rank registered, each gets TABLE.
Afterwards the connections carry INIT and FINALIZED, and their closing is
the signal both ways: a rank exits when dsmexec closes it, and dsmexec
sees a rank end when the rank's side closes.

Every handshake runs non-blocking in dsmexec's poll loop (`accept` starts
one, `advance` moves it on, `expire` ends the slow ones), with a deadline
for the whole of it, handshake and REGISTER: a stranger that is wrong, slow
or silent stalls nothing and is dropped.

The master never prints: a refused connection is a `Refused` exception the
caller logs.
"""
import ipaddress
import socket
from typing import NamedTuple

from libdsm_services import wire

HANDSHAKE_TIMEOUT = wire.HANDSHAKE_TIMEOUT
"""Seconds an accepted connection gets to handshake and register, all of it."""
MAX_PENDING = 256
"""Handshakes under way at most; beyond, the oldest is dropped."""
READ_TIMEOUT = 5.0
"""Seconds to finish reading a control message once its first byte came."""


class Refused(wire.WireError):
    """An incoming connection was refused (bad handshake, bad or duplicate REGISTER)."""


class Registration(NamedTuple):
    """What a rank told us, and the addresses of its connection."""
    rank: int
    host: str       # the rank's reported address
    port: int       # where it listens for peers
    peer: str       # its address as we see it
    local: str      # our address on that connection, as the rank sees us


def is_loopback(addr):
    """True for 127.0.0.0/8 and ::1; False for anything else, names included."""
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def build_table(registrations):
    """The [[host, port], ...] table in rank order, with the loopback fix-up.

    A rank that reported a loopback address, in a job where some rank
    connected from elsewhere, is listed under our address on that remote
    rank's connection: this machine as the remote hosts see it.
    """
    outside = next((r.local for r in registrations if not is_loopback(r.peer)), None)
    return [[outside if outside and is_loopback(r.host) else r.host, r.port]
            for r in sorted(registrations)]


class Master:
    """The listening socket and one connection per registered rank.

    ``size`` ranks are expected; ``bind_all`` listens on 0.0.0.0 (some rank
    comes over ssh), else on 127.0.0.1 only.  ``forget(fd)`` is called
    before the fd of a handshake under way is closed (the poll loop drops it).
    """

    def __init__(self, secret, size, bind_all, forget=lambda fd: None):
        self.secret, self.size, self.forget = secret, size, forget
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0" if bind_all else "127.0.0.1", 0))
        self.sock.listen(max(128, size))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.registrations = {}     # rank -> Registration
        self.conns = {}             # rank -> socket, until closed
        self.pending = {}           # fd -> wire.Incoming: handshakes under way

    @property
    def complete(self):
        """True once every rank registered."""
        return len(self.registrations) == self.size

    def missing(self):
        """The ranks that did not register yet, in order."""
        return [r for r in range(self.size) if r not in self.registrations]

    def accept(self, now=None):
        """Accept one connection and start its handshake; return its fd, or None.

        The caller polls the fd for reading and calls `advance`.  Raises
        Refused for a connection that failed at once (it is closed).
        """
        try:
            conn, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        exchange = wire.FirstMessage(self.secret, wire.ROLE_ACCEPT, wire.LAUNCHER_IDENT)
        try:
            inc = wire.Incoming(conn, addr, exchange, HANDSHAKE_TIMEOUT, now)
        except wire.WireError as e:
            conn.close()
            raise _refused(addr, e) from None
        if len(self.pending) >= MAX_PENDING:
            self._drop(min(self.pending.values(), key=lambda i: i.deadline))
        self.pending[inc.fileno()] = inc
        return inc.fileno()

    def advance(self, fd):
        """Go on with the handshake on fd: its Registration once complete, else None.

        Raises Refused for a connection that failed (it is closed).
        """
        inc = self.pending[fd]
        try:
            if not inc.on_readable():
                return None
            reg = self._register(inc)
        except wire.WireError as e:
            self._drop(inc)
            raise _refused(inc.addr, e) from None
        del self.pending[fd]
        inc.sock.setblocking(True)
        inc.sock.settimeout(READ_TIMEOUT)
        self.registrations[reg.rank] = reg
        self.conns[reg.rank] = inc.sock
        return reg

    def expire(self, now):
        """Drop the handshakes past their deadline; return a Refused for each."""
        late = [inc for inc in self.pending.values() if inc.expired(now)]
        for inc in late:
            self._drop(inc)
        return [_refused(inc.addr, inc.timeout_error()) for inc in late]

    def next_deadline(self):
        """When the first handshake under way runs out, or None."""
        return min((inc.deadline for inc in self.pending.values()), default=None)

    def _drop(self, inc):
        self.forget(inc.fileno())
        del self.pending[inc.fileno()]
        inc.sock.close()

    def _register(self, inc):
        """Check the REGISTER that came after the handshake; WireError says what was wrong."""
        ident, msg = inc.exchange.peer[0], inc.exchange.message
        if msg.type != wire.Message.REGISTER:
            raise wire.WireError("expected REGISTER, got %r" % (msg,))
        rank, host, port = (msg.body.get(k) for k in ("rank", "host", "port"))
        if not isinstance(rank, int) or not 0 <= rank < self.size:
            raise wire.WireError("rank %r out of range 0..%d" % (rank, self.size - 1))
        if rank != ident:
            raise wire.WireError("REGISTER for rank %d after a handshake as %d" % (rank, ident))
        if rank in self.registrations:
            raise wire.WireError("rank %d registered twice" % rank)
        if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise wire.WireError("bad address %r:%r in REGISTER" % (host, port))
        conn = inc.sock
        return Registration(rank, host, port, conn.getpeername()[0], conn.getsockname()[0])

    def send_tables(self, hostnames):
        """Send every rank its TABLE; hostnames are the machine-file hosts by rank.

        A rank whose connection already broke is skipped: its exit tells.
        """
        table = build_table(list(self.registrations.values()))
        for rank, conn in sorted(self.conns.items()):
            try:
                wire.Message(wire.Message.TABLE, {
                    "rank": rank, "size": self.size, "table": table,
                    "hostnames": list(hostnames)}).to_io(conn)
            except OSError:
                pass

    def tell(self, rank, type):
        """Send a message without a body to a rank: False if it is not connected (any
        more); OSError if its connection broke."""
        conn = self.conns.get(rank)
        if conn is not None:
            wire.Message(type).to_io(conn)
        return conn is not None

    def tell_all(self, type):
        """`tell` every rank still connected; a broken connection tells itself."""
        for rank in list(self.conns):
            try:
                self.tell(rank, type)
            except OSError:
                pass

    def receive(self, rank):
        """Read one message from a rank; None when it closed the connection.

        Raises WireError (or OSError) for a broken frame; the caller closes.
        """
        conn = self.conns[rank]
        if not conn.recv(1, socket.MSG_PEEK):
            return None
        return wire.Message.from_io(conn)

    def close(self, rank):
        """Close one rank's connection (the rank then exits by itself)."""
        conn = self.conns.pop(rank, None)
        if conn is not None:
            conn.close()

    def stop_listening(self):
        """No more registrations: close the listening socket and the handshakes under way."""
        self.sock.close()
        for inc in list(self.pending.values()):
            self._drop(inc)


def _refused(addr, error):
    return Refused("refused a connection from %s:%d: %s" % (addr[0], addr[1], error))

