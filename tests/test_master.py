"""The master socket (services/master.py): registration, refusals, the table and its fix-up."""
import socket
import threading

import pytest

from services import wire
from services.master import Master, Refused, Registration, build_table, is_loopback

TIMEOUT = 5.0


def reg(rank, host, port, peer="127.0.0.1", local="127.0.0.1"):
    return Registration(rank, host, port, peer, local)


def test_table_without_remote_ranks_keeps_the_reported_hosts():
    assert build_table([reg(1, "127.0.0.1", 11), reg(0, "127.0.0.1", 10)]) == [
        ["127.0.0.1", 10], ["127.0.0.1", 11]]


def test_loopback_ranks_get_our_address_as_remote_ranks_see_it():
    regs = [reg(0, "127.0.0.1", 10),
            reg(1, "10.0.0.5", 11, peer="10.0.0.5", local="10.0.0.1"),
            reg(2, "127.0.0.1", 12)]
    assert build_table(regs) == [["10.0.0.1", 10], ["10.0.0.5", 11], ["10.0.0.1", 12]]


@pytest.mark.parametrize("addr, expected", [("127.0.0.1", True), ("127.1.2.3", True),
                                            ("::1", True), ("10.0.0.1", False),
                                            ("localhost", False), ("", False)])
def test_is_loopback(addr, expected):
    assert is_loopback(addr) is expected


def rank_side(port, secret, rank, body=None, result=None):
    """What services.rank does: connect, handshake, REGISTER, then read the TABLE."""
    try:
        with wire.connect("127.0.0.1", port, TIMEOUT) as s:
            wire.handshake(s, secret, wire.ROLE_CONNECT, rank)
            wire.Message(wire.Message.REGISTER, body or {
                "rank": rank, "host": "127.0.0.1", "port": 40000 + rank}).to_io(s)
            result[rank] = wire.Message.from_io(s)
    except Exception as e:
        result[rank] = e


@pytest.fixture
def master():
    m = Master(wire.new_secret(), 2, bind_all=False)
    m.sock.settimeout(TIMEOUT)
    yield m
    for rank in list(m.conns):
        m.close(rank)
    m.stop_listening()


def start(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def test_master_listens_on_loopback_only_unless_asked():
    m = Master(wire.new_secret(), 1, bind_all=False)
    assert m.sock.getsockname()[0] == "127.0.0.1"
    m.stop_listening()
    m = Master(wire.new_secret(), 1, bind_all=True)
    assert m.sock.getsockname()[0] == "0.0.0.0"
    m.stop_listening()


def test_registration_and_tables(master):
    result = {}
    threads = [start(rank_side, master.port, master.secret, r, None, result) for r in (1, 0)]
    for _ in range(2):
        master.accept()
    assert master.complete and master.missing() == []
    master.send_tables(["hostA", "hostB"])
    for t in threads:
        t.join(TIMEOUT)
    for r in (0, 1):
        assert result[r] == wire.Message(wire.Message.TABLE, {
            "rank": r, "size": 2, "table": [["127.0.0.1", 40000], ["127.0.0.1", 40001]],
            "hostnames": ["hostA", "hostB"]})


def test_wrong_secret_is_refused_and_registration_goes_on(master):
    result = {}
    t = start(rank_side, master.port, wire.new_secret(), 0, None, result)
    with pytest.raises(Refused, match=r"refused a connection from 127\.0\.0\.1:\d+: .*job secret"):
        master.accept()
    t.join(TIMEOUT)
    assert isinstance(result[0], wire.WireError)
    assert master.missing() == [0, 1]
    start(rank_side, master.port, master.secret, 0, None, result)
    assert master.accept().rank == 0
    assert master.missing() == [1]


@pytest.mark.parametrize("rank, body, reason", [
    (5, None, "rank 5 out of range 0..1"),
    (0, {"rank": 1, "host": "h", "port": 1}, "REGISTER for rank 1 after a handshake as 0"),
    (0, {"rank": 0, "host": "h", "port": 0}, "bad address"),
])
def test_bad_registrations_are_refused(master, rank, body, reason):
    result = {}
    t = start(rank_side, master.port, master.secret, rank, body, result)
    with pytest.raises(Refused, match=reason):
        master.accept()
    t.join(TIMEOUT)
    assert master.registrations == {}


def test_duplicate_rank_is_refused(master):
    result = {}
    start(rank_side, master.port, master.secret, 0, None, result)
    master.accept()
    t = start(rank_side, master.port, master.secret, 0, None, result)
    with pytest.raises(Refused, match="rank 0 registered twice"):
        master.accept()
    t.join(TIMEOUT)


def test_silent_connection_is_refused_after_the_handshake_timeout(master, monkeypatch):
    monkeypatch.setattr("services.master.HANDSHAKE_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", master.port)):
        with pytest.raises(Refused, match="timed out"):
            master.accept()


def test_receive_reads_messages_then_none_at_close(master):
    a, b = socket.socketpair()
    master.conns[0] = b
    wire.Message(wire.Message.INIT).to_io(a)
    wire.Message(wire.Message.FINALIZED).to_io(a)
    a.close()
    assert master.receive(0) == wire.Message(wire.Message.INIT)
    assert master.receive(0) == wire.Message(wire.Message.FINALIZED)
    assert master.receive(0) is None
