"""The wire format (services/wire.py): control messages and the handshake."""
import socket
import struct
import threading

import pytest

from libdsm_services import meshwire, wire
from libdsm_services.wire import Message

TIMEOUT = None
"""Every wait on a socket or a thread: none of its own; the test's timeout bounds it."""


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.settimeout(TIMEOUT)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("msg", [
    Message(Message.REGISTER, {"rank": 3, "host": "10.0.0.2", "port": 40001}),
    Message(Message.TABLE, {"rank": 0, "size": 2, "table": [["h", 1], ["h", 2]],
                            "hostnames": ["a", "ü"]}),
    Message(Message.INIT),
    Message(Message.FINALIZED),
])
def test_message_round_trip(pair, msg):
    msg.to_io(pair[0])
    got = Message.from_io(pair[1])
    assert got == msg and got is not msg


def test_messages_follow_each_other_on_one_stream(pair):
    sent = [Message(Message.INIT), Message(Message.REGISTER, {"rank": 1}), Message(Message.FINALIZED)]
    pair[0].sendall(b"".join(m.encode() for m in sent))
    assert [Message.from_io(pair[1]) for _ in sent] == sent


def test_short_header_says_what_was_expected(pair):
    pair[0].sendall(b"\x03\x00")
    pair[0].shutdown(socket.SHUT_WR)
    with pytest.raises(wire.WireError, match="expected 5 bytes of message header, got 2"):
        Message.from_io(pair[1])


def test_short_body_says_what_was_expected(pair):
    pair[0].sendall(Message(Message.REGISTER, {"rank": 1}).encode()[:-3])
    pair[0].shutdown(socket.SHUT_WR)
    with pytest.raises(wire.WireError, match=r"expected 10 bytes of message body, got 7"):
        Message.from_io(pair[1])


def test_unknown_type_and_oversized_body_are_refused(pair):
    with pytest.raises(wire.WireError, match="unknown control message type 12"):
        Message(12)
    pair[0].sendall(Message.HEADER.pack(Message.INIT, Message.MAX_BODY + 1))
    with pytest.raises(wire.WireError, match="exceeds"):
        Message.from_io(pair[1])


def test_bad_json_body(pair):
    pair[0].sendall(Message.HEADER.pack(Message.INIT, 3) + b"{x}")
    with pytest.raises(wire.WireError, match="bad control message body"):
        Message.from_io(pair[1])


def test_a_body_must_be_a_json_object(pair):
    pair[0].sendall(Message.HEADER.pack(Message.REGISTER, 3) + b"[1]")
    with pytest.raises(wire.WireError, match="expected a JSON object, got list"):
        Message.from_io(pair[1])


def both_sides(pair, left, right, close_right=False):
    """Run `left` on pair[0] (thread) and `right` on pair[1]; return both outcomes.

    Each is handshake kwargs (outcome: its result) or an Exchange (outcome: the
    exchange once run); an exception is the outcome when one is raised.
    """
    outcome = {}

    def side(name, sock, what):
        try:
            if isinstance(what, wire.Exchange):
                what.run(sock)
                outcome[name] = what
            else:
                outcome[name] = wire.handshake(sock, **what)
        except Exception as e:
            outcome[name] = e
            if close_right and name == "right":
                sock.close()

    t = threading.Thread(target=side, args=("left", pair[0], left))
    t.start()
    side("right", pair[1], right)
    t.join(TIMEOUT)
    assert not t.is_alive()
    return outcome["left"], outcome["right"]


def test_handshake_succeeds_with_the_same_secret(pair):
    secret = wire.new_secret()
    left, right = both_sides(pair, dict(secret=secret, role=wire.ROLE_CONNECT, ident=3),
                             dict(secret=secret, role=wire.ROLE_ACCEPT, ident=wire.LAUNCHER_IDENT))
    assert left == (wire.LAUNCHER_IDENT, wire.PROTOCOL_MINOR)
    assert right == (3, wire.PROTOCOL_MINOR)


def test_wrong_secret_is_refused_on_both_sides(pair):
    left, right = both_sides(pair, dict(secret=wire.new_secret(), role=wire.ROLE_CONNECT, ident=1),
                             dict(secret=wire.new_secret(), role=wire.ROLE_ACCEPT, ident=0))
    for e in (left, right):
        assert isinstance(e, wire.HandshakeError)
        assert "does not know the job secret" in str(e)


def test_a_reflected_hello_does_not_pass(pair):
    """Same role on both ends (what a reflecting peer would produce) fails the proof."""
    secret = wire.new_secret()
    left, right = both_sides(pair, dict(secret=secret, role=wire.ROLE_ACCEPT, ident=1),
                             dict(secret=secret, role=wire.ROLE_ACCEPT, ident=0))
    assert isinstance(left, wire.HandshakeError) and isinstance(right, wire.HandshakeError)


def test_bad_magic_is_refused(pair):
    hello = struct.pack("!4sHH16sH", b"HTTP", 1, 0, b"\0" * 16, 0)
    pair[0].sendall(hello)
    with pytest.raises(wire.HandshakeError, match=r"bad magic b'HTTP', expected b'DSM1'"):
        wire.handshake(pair[1], wire.new_secret(), wire.ROLE_ACCEPT, 0)


def test_peer_closing_early_is_a_handshake_error(pair):
    pair[0].shutdown(socket.SHUT_WR)
    with pytest.raises(wire.HandshakeError, match="expected 26 bytes of handshake hello, got 0"):
        wire.handshake(pair[1], wire.new_secret(), wire.ROLE_ACCEPT, 0)


def test_major_version_mismatch_names_both_versions(pair):
    secret = wire.new_secret()
    left, right = both_sides(pair, dict(secret=secret, role=wire.ROLE_CONNECT, ident=1,
                                        version=(2, 3)),
                             dict(secret=secret, role=wire.ROLE_ACCEPT, ident=0))
    assert isinstance(right, wire.VersionMismatch) and isinstance(left, wire.VersionMismatch)
    assert "we speak 1.%d, the peer speaks 2.3" % wire.PROTOCOL_MINOR in str(right)
    assert "we speak 2.3, the peer speaks 1.%d" % wire.PROTOCOL_MINOR in str(left)
    assert "same libdsm version" in str(right)


def test_minor_version_difference_is_accepted(pair):
    secret = wire.new_secret()
    left, right = both_sides(pair, dict(secret=secret, role=wire.ROLE_CONNECT, ident=1,
                                        version=(wire.PROTOCOL_MAJOR, 7)),
                             dict(secret=secret, role=wire.ROLE_ACCEPT, ident=0))
    assert left == (0, wire.PROTOCOL_MINOR)
    assert right == (1, 7)


def test_handshake_rejects_an_unknown_role(pair):
    with pytest.raises(ValueError, match="role must be"):
        wire.handshake(pair[0], wire.new_secret(), b"X", 0)


@pytest.mark.parametrize("text, expected", [("h:1", ("h", 1)), ("::1:80", ("::1", 80)),
                                            ("ssh:65535", ("ssh", 65535))])
def test_parse_hostport(text, expected):
    assert wire.parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["h", ":80", "h:", "h:0", "h:65536", "h:x"])
def test_parse_hostport_refuses(text):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        wire.parse_hostport(text)


LAYOUT = (1 << 26, 0x200000000000, 4, 4096, 2 << 16 | 3, 0, 1)


def mesh_sides(pair, theirs=LAYOUT, secret=None):
    """MeshHandshake: rank 3 connects on pair[0] (thread) with layout `theirs`, rank 0
    accepts on pair[1] with LAYOUT; both outcomes (the exchange or the exception)."""
    secret = secret or wire.new_secret()
    left = meshwire.MeshHandshake(secret, wire.ROLE_CONNECT, 3, theirs)
    right = meshwire.MeshHandshake(secret, wire.ROLE_ACCEPT, 0, LAYOUT)
    return both_sides(pair, left, right)


def test_mesh_handshake_agrees_on_the_layout(pair):
    left, right = mesh_sides(pair)
    assert (left.peer, right.peer) == ((0, wire.PROTOCOL_MINOR), (3, wire.PROTOCOL_MINOR))


def test_layout_mismatch_names_the_field_both_values_and_the_fix(pair):
    _, right = mesh_sides(pair, theirs=(1 << 26, 0x300000000000) + LAYOUT[2:])
    assert isinstance(right, meshwire.LayoutMismatch) and not isinstance(right, wire.HandshakeError)
    assert str(right) == ("region base differs: this rank has 0x200000000000, rank 3 has "
                          "0x300000000000; give every rank the same DSM_* settings")


def test_ranks_with_different_cores_are_refused_with_both_versions(pair):
    _, right = mesh_sides(pair, theirs=LAYOUT[:4] + (2 << 16 | 2,) + LAYOUT[5:])
    assert isinstance(right, meshwire.LayoutMismatch)
    assert str(right) == ("the C core differs: this rank has version 2.3, rank 3 has 2.2; "
                          "install the same libdsm on every host")


def test_ranks_that_share_memory_differently_are_refused_naming_both_settings(pair):
    _, right = mesh_sides(pair, theirs=LAYOUT[:5] + (1, 1))
    assert str(right) == ("the ranks share memory differently: this rank has DSM_SHARE=rank, "
                          "rank 3 has DSM_SHARE=host; give every rank the same share=/DSM_SHARE")
    _, right = mesh_sides(pair, theirs=LAYOUT[:6] + (2,))
    assert str(right) == ("the ranks group hosts differently: this rank has DSM_VHOSTS=1, "
                          "rank 3 has DSM_VHOSTS=2; give every rank the same vhosts=/DSM_VHOSTS")


def test_check_peer_refuses_before_any_layout_is_sent(pair):
    def refuse(ident):
        raise wire.HandshakeError("not rank %d" % ident)
    secret = wire.new_secret()
    left = meshwire.MeshHandshake(secret, wire.ROLE_CONNECT, 3, LAYOUT)
    right = meshwire.MeshHandshake(secret, wire.ROLE_ACCEPT, 0, LAYOUT, check_peer=refuse)
    left, right = both_sides(pair, left, right, close_right=True)
    assert str(right) == "not rank 3"
    # the connecting side proved itself, so what follows is no HandshakeError
    assert isinstance(left, wire.WireError) and not isinstance(left, wire.HandshakeError)
