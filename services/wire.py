"""The wire format shared by dsmexec and every rank: one leaf module, stdlib only.

Two things cross the wire in Python:

* the **handshake** that opens every connection (rank to dsmexec, rank to
  rank): a magic number, the protocol version, and an HMAC proof that the
  peer knows the job secret;
* **control messages** on the rank-to-dsmexec connection: a small typed
  frame (`Message`) whose body is JSON.

* the **region layout** that two ranks exchange right after their
  handshake, so ranks configured differently fail at init instead of
  corrupting memory.

Page traffic between ranks uses a binary header defined by the C core
(`libdsm/csrc/proto.h`); it starts only after this handshake succeeded.
"""
import hashlib
import hmac
import json
import os
import socket
import struct

MAGIC = b"DSM1"
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
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


def handshake(sock, secret, role, ident, version=(PROTOCOL_MAJOR, PROTOCOL_MINOR)):
    """Run the symmetric handshake on a connected socket.

    Both sides send HELLO(magic, version, nonce, ident) and then an HMAC over
    their role and both nonces, so a peer without the secret is refused, and
    a reflected HELLO cannot pass (the roles differ).  Returns
    ``(peer_ident, peer_minor)``.  Raises HandshakeError (VersionMismatch for
    a different major version); the caller closes the socket.
    """
    if role not in (ROLE_CONNECT, ROLE_ACCEPT):
        raise ValueError("role must be ROLE_CONNECT or ROLE_ACCEPT, got %r" % (role,))
    nonce = os.urandom(NONCE_BYTES)
    try:
        sock.sendall(_HELLO.pack(MAGIC, version[0], version[1], nonce, ident))
        magic, major, minor, peer_nonce, peer_ident = _HELLO.unpack(
            recv_exact(sock, _HELLO.size, "handshake hello"))
    except (WireError, ConnectionError) as e:
        raise HandshakeError("handshake: %s" % e) from None
    if magic != MAGIC:
        raise HandshakeError("handshake: bad magic %r, expected %r" % (magic, MAGIC))
    if major != version[0]:
        raise VersionMismatch(tuple(version), (major, minor))
    peer_role = ROLE_ACCEPT if role == ROLE_CONNECT else ROLE_CONNECT
    try:
        sock.sendall(_mac(secret, role, nonce, peer_nonce))
        peer_mac = recv_exact(sock, _MAC_BYTES, "handshake proof")
    except (WireError, ConnectionError) as e:
        raise HandshakeError("handshake: %s" % e) from None
    if not hmac.compare_digest(peer_mac, _mac(secret, peer_role, peer_nonce, nonce)):
        raise HandshakeError("handshake: the peer does not know the job secret")
    return peer_ident, minor


# ---------------------------------------------------------------- control messages

class Message:
    """One control frame: a type code and a JSON body.

    Header: ``!BI`` (type, body length).  Types:

    REGISTER  rank -> dsmexec  {"rank", "host", "port"}: where the rank listens
    TABLE     dsmexec -> rank  {"rank", "size", "table": [[host, port], ...],
                                "hostnames": [...]}
    INIT      rank -> dsmexec  {}: libdsm.init() ran
    FINALIZED rank -> dsmexec  {}: finalize() completed
    LOST_PEER rank -> dsmexec  {"peer_error": text}: this rank is failing
                               because another rank went away first
    """
    REGISTER, TABLE, INIT, FINALIZED, LOST_PEER = 1, 2, 3, 4, 5
    NAMES = {1: "REGISTER", 2: "TABLE", 3: "INIT", 4: "FINALIZED", 5: "LOST_PEER"}
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


# ---------------------------------------------------------------- region layout

LAYOUT = struct.Struct("!QQQQ")
LAYOUT_NAMES = ("size", "base", "block_pages", "page_size")


class LayoutMismatch(WireError):
    """An authenticated peer maps the region differently: ``name``, ``ours``, ``theirs``."""

    def __init__(self, name, ours, theirs, peer):
        self.name, self.ours, self.theirs, self.peer = name, ours, theirs, peer
        super().__init__("region %s differs: this rank has %#x, rank %d has %#x; "
                         "give every rank the same DSM_* settings" % (name, ours, peer, theirs))


def check_layout(ours, theirs, peer):
    """Raise LayoutMismatch for the first field of the two layouts that differs."""
    for name, a, b in zip(LAYOUT_NAMES, ours, theirs):
        if a != b:
            raise LayoutMismatch(name, a, b, peer)


def exchange_layout(sock, layout, peer):
    """Send our (size, base, block_pages, page_size), read the peer's, compare them."""
    sock.sendall(LAYOUT.pack(*layout))
    check_layout(layout, LAYOUT.unpack(recv_exact(sock, LAYOUT.size, "region layout")), peer)


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
