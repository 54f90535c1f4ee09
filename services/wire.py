"""The wire format shared by dsmexec and every rank: one leaf module, stdlib only.

Two things cross the wire here:

* the **handshake** that opens every connection (rank to dsmexec, rank to
  rank): a magic number, the protocol version, and an HMAC proof that the
  peer knows the job secret;
* **control messages** on the rank-to-dsmexec connection: a small typed
  frame (`Message`) whose body is JSON.

Two ranks go on to exchange their region layout (`meshwire`).

Each exchange is a table of states without I/O (`Exchange`); `run` drives
one on a blocking socket, `Incoming` on a non-blocking one in a poll loop,
with one deadline for all of it, so a stranger cannot stall the listener.

Page traffic between ranks uses a binary header defined by the C core
(`libdsm/csrc/proto.h`); it starts only after this handshake succeeded.
"""
import hashlib
import hmac
import json
import os
import socket
import struct
import time

MAGIC = b"DSM1"
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 2      # 1.1: STDIN, FAILED; 1.2: STACKS, ENDING/ENDED, LOST_PEER from the core
SECRET_BYTES = 32
NONCE_BYTES = 16

ROLE_CONNECT = b"C"
ROLE_ACCEPT = b"A"

# magic, major, minor, nonce, sender ident (rank, or 0xFFFF for dsmexec)
_HELLO = struct.Struct("!4sHH16sH")
_MAC_BYTES = hashlib.sha256().digest_size
LAUNCHER_IDENT = 0xFFFF


class WireError(Exception):
    """Something on the wire was not what the protocol expects."""


class HandshakeError(WireError, ConnectionError):
    """A connection failed the handshake and was refused."""


class VersionMismatch(HandshakeError):
    """The peer speaks a different major version of the protocol."""

    def __init__(self, ours, theirs):
        self.ours, self.theirs = ours, theirs
        super().__init__(
            "protocol version mismatch: we speak %d.%d, the peer speaks %d.%d; "
            "run the same libdsm version on every host" % (ours + theirs))


def new_secret():
    """A fresh random job secret."""
    return os.urandom(SECRET_BYTES)


def recv_exact(sock, n, what="data"):
    """Read exactly n bytes or raise WireError saying how many came."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise WireError("expected %d bytes of %s, got %d" % (n, what, len(buf)))
        buf += chunk
    return bytes(buf)


def _mac(secret, role, sender_nonce, receiver_nonce):
    return hmac.new(secret, role + sender_nonce + receiver_nonce, hashlib.sha256).digest()


# ---------------------------------------------------------------- exchanges as state tables

class Exchange:
    """A protocol exchange without I/O: what to send, and a table of states.

    ``STATES`` maps a state to ``(what it waits for, handler)``.  A state
    waits for exactly ``need`` bytes; `feed` hands them to its handler, which
    may append to ``out`` and returns the next ``(state, need)``, or DONE.
    Drivers do the I/O: `run` on a blocking socket, `Incoming` on a
    non-blocking one inside a poll loop.
    """
    STATES = {}
    DONE = (None, 0)

    def __init__(self, state, need):
        self.out = bytearray()
        self.state, self.need = state, need

    @property
    def done(self):
        return self.state is None

    @property
    def what(self):
        return self.STATES[self.state][0]

    def feed(self, data):
        """Consume the ``need`` bytes the current state waits for."""
        self.state, self.need = self.STATES[self.state][1](self, data)

    def error(self, reason):
        """The exception for an I/O failure (short read, reset, timeout) now."""
        return WireError(reason)

    def run(self, sock):
        """Drive the exchange to its end on a blocking socket (its own timeout applies)."""
        while True:
            try:
                if self.out:
                    sock.sendall(self.out)
                    self.out.clear()
                if self.done:
                    return
                data = recv_exact(sock, self.need, self.what)
            except (WireError, ConnectionError) as e:
                raise self.error(str(e)) from None
            self.feed(data)


class Handshake(Exchange):
    """The symmetric handshake of one side.

    Both sides send HELLO(magic, version, nonce, ident) and then an HMAC over
    their role and both nonces, so a peer without the secret is refused, and
    a reflected HELLO cannot pass (the roles differ).  ``peer`` is
    ``(peer_ident, peer_minor)`` once the peer proved the secret.  Failures
    before that are HandshakeError (VersionMismatch for a different major
    version).  Subclasses go on after the proof (`after_proof`).
    """

    def __init__(self, secret, role, ident, version=(PROTOCOL_MAJOR, PROTOCOL_MINOR)):
        if role not in (ROLE_CONNECT, ROLE_ACCEPT):
            raise ValueError("role must be ROLE_CONNECT or ROLE_ACCEPT, got %r" % (role,))
        super().__init__("hello", _HELLO.size)
        self.secret, self.role, self.version = secret, role, tuple(version)
        self.nonce = os.urandom(NONCE_BYTES)
        self.out += _HELLO.pack(MAGIC, version[0], version[1], self.nonce, ident)
        self.peer = None

    def error(self, reason):
        if self.peer is None:
            return HandshakeError("handshake: %s" % reason)
        return WireError(reason)

    def _on_hello(self, data):
        magic, major, minor, self.peer_nonce, ident = _HELLO.unpack(data)
        if magic != MAGIC:
            raise HandshakeError("handshake: bad magic %r, expected %r" % (magic, MAGIC))
        if major != self.version[0]:
            raise VersionMismatch(self.version, (major, minor))
        self.claimed = (ident, minor)
        self.out += _mac(self.secret, self.role, self.nonce, self.peer_nonce)
        return "proof", _MAC_BYTES

    def _on_proof(self, data):
        peer_role = ROLE_ACCEPT if self.role == ROLE_CONNECT else ROLE_CONNECT
        if not hmac.compare_digest(data, _mac(self.secret, peer_role, self.peer_nonce,
                                              self.nonce)):
            raise HandshakeError("handshake: the peer does not know the job secret")
        self.peer = self.claimed
        return self.after_proof()

    def after_proof(self):
        """The next (state, need) once the peer is authenticated."""
        return self.DONE

    STATES = {"hello": ("handshake hello", _on_hello),
              "proof": ("handshake proof", _on_proof)}


def handshake(sock, secret, role, ident, version=(PROTOCOL_MAJOR, PROTOCOL_MINOR)):
    """Run the handshake on a connected blocking socket; return ``(peer_ident, peer_minor)``.

    Raises HandshakeError (VersionMismatch for a different major version);
    the caller closes the socket.
    """
    h = Handshake(secret, role, ident, version)
    h.run(sock)
    return h.peer


HANDSHAKE_TIMEOUT = 2.0
"""Seconds an accepted connection gets for its WHOLE handshake (and what follows it)."""


class Incoming:
    """An accepted connection whose exchange runs non-blocking, within one deadline.

    The poll loop calls `on_readable` when the socket is readable and
    `expired` to find the ones past their deadline.  The constructor sends
    what the exchange starts with.  Errors are the exchange's (HandshakeError
    before the peer is authenticated); the caller closes the socket.
    """

    def __init__(self, sock, addr, exchange, timeout=HANDSHAKE_TIMEOUT, now=None):
        self.sock, self.addr, self.exchange, self.timeout = sock, addr, exchange, timeout
        self.deadline = (time.monotonic() if now is None else now) + timeout
        self._buf = bytearray()
        sock.setblocking(False)
        self._send()

    def fileno(self):
        return self.sock.fileno()

    def on_readable(self):
        """Read what came and advance; True once the exchange is done."""
        x = self.exchange
        while not x.done:
            if len(self._buf) < x.need:         # never read past what the state waits for
                try:
                    chunk = self.sock.recv(x.need - len(self._buf))
                except BlockingIOError:
                    return False
                except OSError as e:
                    raise x.error(e.strerror or str(e)) from None
                if not chunk:
                    raise x.error("expected %d bytes of %s, got %d"
                                  % (x.need, x.what, len(self._buf)))
                self._buf += chunk
                continue
            data = bytes(self._buf)
            self._buf.clear()
            x.feed(data)
            self._send()
        return True

    def expired(self, now):
        return now >= self.deadline

    def timeout_error(self):
        x = self.exchange
        return x.error("timed out after %g s waiting for %s (got %d of %d bytes)"
                       % (self.timeout, x.what, len(self._buf), x.need))

    def _send(self):
        # A fresh connection's send buffer takes these few dozen bytes at once.
        out = self.exchange.out
        if out:
            try:
                sent = self.sock.send(out)
            except OSError as e:
                raise self.exchange.error(e.strerror or str(e)) from None
            if sent < len(out):
                raise self.exchange.error("could send only %d of %d bytes" % (sent, len(out)))
            out.clear()


# ---------------------------------------------------------------- control messages

class Message:
    """One control frame: a type code and a JSON body.

    Header: ``!BI`` (type, body length).  Types:

    REGISTER  rank -> dsmexec  {"rank", "host", "port"}: where the rank listens
    TABLE     dsmexec -> rank  {"rank", "size", "table": [[host, port], ...],
                                "hostnames": [...]}
    INIT      rank -> dsmexec  {}: libdsm.init() ran
    FINALIZED rank -> dsmexec  {}: finalize() completed
    LOST_PEER rank -> dsmexec  {"peer": rank, "how": "closed"|"silent",
                               "peer_error": text}: this rank's core lost
                               that rank (its connection closed or reset, or
                               it fell silent past DSM_HEARTBEAT_S) and fails
                               because of it.  Written by the C core itself
                               (libdsm/csrc/peer.c), before the failure is
                               recorded; services/rankreport.py defines it.
    EXITED    rank -> dsmexec  {"status", "signal"}: how the rank ended, from
                               its supervisor (an ssh rank; see services/rank.py)
    STDIN     dsmexec -> rank 0 {"data": base64}: dsmexec's stdin; "" is its end
    FAILED    rank -> dsmexec  {"reason": text}: the bootstrap cannot run the
                               program (the file is missing); the rank exits
    STACKS    dsmexec -> rank  {}: print every thread's stack (services/stacks.py)
    ENDING    dsmexec -> rank  {}: the job ends before the rank finished: write what
                               --trace/--stats want now (rankreport.at_end), then say ENDED
    ENDED     rank -> dsmexec  {}: its last words are out; its connection may close
    """
    (REGISTER, TABLE, INIT, FINALIZED, LOST_PEER, EXITED, STDIN, FAILED, STACKS,
     ENDING, ENDED) = range(1, 12)
    NAMES = {1: "REGISTER", 2: "TABLE", 3: "INIT", 4: "FINALIZED", 5: "LOST_PEER", 6: "EXITED",
             7: "STDIN", 8: "FAILED", 9: "STACKS", 10: "ENDING", 11: "ENDED"}
    HEADER = struct.Struct("!BI")
    MAX_BODY = 16 << 20

    def __init__(self, type, body=None):
        if type not in self.NAMES:
            raise WireError("unknown control message type %d" % type)
        self.type = type
        self.body = body if body is not None else {}

    def __repr__(self):
        return "Message(%s, %r)" % (self.NAMES[self.type], self.body)

    def __eq__(self, other):
        return isinstance(other, Message) and (self.type, self.body) == (other.type, other.body)

    def encode(self):
        data = json.dumps(self.body, separators=(",", ":")).encode()
        return self.HEADER.pack(self.type, len(data)) + data

    @classmethod
    def decode(cls, header, data):
        """Build a Message from a header and its body bytes."""
        type, length = cls.HEADER.unpack(header)
        if length != len(data):
            raise WireError("expected %d body bytes, got %d" % (length, len(data)))
        try:
            body = json.loads(data.decode()) if data else {}
        except ValueError as e:
            raise WireError("bad control message body: %s" % e) from None
        if not isinstance(body, dict):
            raise WireError("bad control message body: expected a JSON object, got %s"
                            % body.__class__.__name__)
        return cls(type, body)

    def to_io(self, sock):
        sock.sendall(self.encode())

    @classmethod
    def from_io(cls, sock):
        """Read one message; WireError on a short read or a bad frame."""
        header = recv_exact(sock, cls.HEADER.size, "message header")
        type, length = cls.HEADER.unpack(header)
        if length > cls.MAX_BODY:
            raise WireError("control message of %d bytes exceeds %d" % (length, cls.MAX_BODY))
        return cls.decode(header, recv_exact(sock, length, "message body"))


class FirstMessage(Handshake):
    """The accepting side's handshake, then the peer's first control message (``message``)."""

    def after_proof(self):
        return "header", Message.HEADER.size

    def _on_header(self, data):
        self.header = data
        _type, length = Message.HEADER.unpack(data)
        if length > Message.MAX_BODY:
            raise self.error("control message of %d bytes exceeds %d" % (length, Message.MAX_BODY))
        return "body", length

    def _on_body(self, data):
        self.message = Message.decode(self.header, data)
        return self.DONE

    STATES = {**Handshake.STATES, "header": ("message header", _on_header),
              "body": ("message body", _on_body)}

def parse_hostport(text):
    """'host:port' -> (host, port), with a clear ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, got %r" % (text,))
    return host, int(port)


def connect(host, port, timeout):
    """A TCP connection with TCP_NODELAY set."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
