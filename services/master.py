"""The master socket: where ranks register and dsmexec hands out the connection table.

Each rank connects, passes the handshake (services/wire.py, proving it
knows the job secret) and sends REGISTER {"rank", "host", "port"}: where
it listens for its peers.  Once every rank registered, each gets TABLE.
Afterwards the connections carry INIT and FINALIZED, and their closing is
the signal both ways: a rank exits when dsmexec closes it, and dsmexec
sees a rank end when the rank's side closes.

The master never prints: a refused connection is a `Refused` exception the
caller logs.
"""
import ipaddress
import socket
from typing import NamedTuple

from services import wire

HANDSHAKE_TIMEOUT = 5.0
"""Seconds an accepted connection gets to handshake and register."""
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
    comes over ssh), else on 127.0.0.1 only.
    """

    def __init__(self, secret, size, bind_all):
        self.secret, self.size = secret, size
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0" if bind_all else "127.0.0.1", 0))
        self.sock.listen(max(128, size))
        self.port = self.sock.getsockname()[1]
        self.registrations = {}     # rank -> Registration
        self.conns = {}             # rank -> socket, until closed

    @property
    def complete(self):
        """True once every rank registered."""
        return len(self.registrations) == self.size

    def missing(self):
        """The ranks that did not register yet, in order."""
        return [r for r in range(self.size) if r not in self.registrations]

    def accept(self):
        """Accept one connection; return its Registration, or raise Refused (it is closed)."""
        conn, addr = self.sock.accept()
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            reg = self._register(conn)
        except (OSError, wire.WireError) as e:
            conn.close()
            raise Refused("refused a connection from %s:%d: %s" % (addr[0], addr[1], e)) from None
        conn.settimeout(READ_TIMEOUT)
        self.registrations[reg.rank] = reg
        self.conns[reg.rank] = conn
        return reg

    def _register(self, conn):
        """Handshake and REGISTER on a fresh connection; WireError says what was wrong."""
        ident, _minor = wire.handshake(conn, self.secret, wire.ROLE_ACCEPT, wire.LAUNCHER_IDENT)
        msg = wire.Message.from_io(conn)
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
        """No more registrations: close the listening socket."""
        self.sock.close()

