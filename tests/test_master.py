"""The master socket (services/master.py): registration, refusals, the table and its fix-up."""
import select
import socket
import threading
import time

import pytest

from libdsm_services import wire
from libdsm_services.master import Master, Refused, Registration, build_table, is_loopback

TIMEOUT = None
"""Every wait on a socket or a thread: none of its own; the test's timeout bounds it."""


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
    """What libdsm_services.rank does: connect, handshake, REGISTER, then read the TABLE."""
    try:
        with wire.connect("127.0.0.1", port, TIMEOUT) as s:
            wire.handshake(s, secret, wire.ROLE_CONNECT, rank)
            wire.Message(wire.Message.REGISTER, body or {
                "rank": rank, "host": "127.0.0.1", "port": 40000 + rank}).to_io(s)
            result[rank] = wire.Message.from_io(s)
    except Exception as e:
        result[rank] = e


def drive(master):
    """What dsmexec's loop does: accept and advance handshakes until one registers
    (returned) or fails (its Refused raised), on the master's real clock."""
    while True:
        for refused in master.expire(time.monotonic()):
            raise refused
        fds = [master.sock] + list(master.pending)
        for ready in select.select(fds, [], [], 0.05)[0]:
            if ready is master.sock:
                master.accept()
            else:
                reg = master.advance(ready)
                if reg is not None:
                    return reg


@pytest.fixture
def master():
    m = Master(wire.new_secret(), 2, bind_all=False)
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
        drive(master)
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
        drive(master)
    t.join(TIMEOUT)
    assert isinstance(result[0], wire.WireError)
    assert master.missing() == [0, 1]
    start(rank_side, master.port, master.secret, 0, None, result)
    assert drive(master).rank == 0
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
        drive(master)
    t.join(TIMEOUT)
    assert master.registrations == {}


def test_duplicate_rank_is_refused(master):
    result = {}
    start(rank_side, master.port, master.secret, 0, None, result)
    drive(master)
    t = start(rank_side, master.port, master.secret, 0, None, result)
    with pytest.raises(Refused, match="rank 0 registered twice"):
        drive(master)
    t.join(TIMEOUT)


def test_silent_connection_is_refused_after_the_handshake_timeout(master, monkeypatch):
    monkeypatch.setattr("libdsm_services.master.HANDSHAKE_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", master.port)):
        with pytest.raises(Refused, match=r"timed out after 0\.2 s waiting for handshake hello "
                           r"\(got 0 of 26 bytes\)"):
            drive(master)
    assert master.pending == {}


def test_the_deadline_is_for_the_whole_handshake_not_each_read(master, monkeypatch):
    """A stranger that sends a byte now and then is dropped all the same.

    The master takes the time from its caller, so the test runs its own
    clock: every byte comes in time for the read, and the handshake is
    still refused once the clock passes the deadline of the whole."""
    monkeypatch.setattr("libdsm_services.master.HANDSHAKE_TIMEOUT", 0.5)
    with socket.create_connection(("127.0.0.1", master.port)) as s:
        master_fd = None
        while master_fd is None:
            select.select([master.sock], [], [], TIMEOUT)
            master_fd = master.accept(now=100.0)
        for tick in range(1, 5):             # a byte every 0.1 s of that clock
            s.send(b"D")
            assert select.select([master_fd], [], [], TIMEOUT)[0]
            assert master.advance(master_fd) is None
            assert master.expire(100.0 + 0.1 * tick) == []
        [refused] = master.expire(100.5)
    assert "handshake: timed out after 0.5 s waiting for handshake hello" in str(refused)
    assert master.pending == {}


def test_strangers_do_not_hold_up_a_real_rank(master, monkeypatch):
    """Idle, trickling and garbage connections stay open; the rank registers past them.

    The strangers connect first (create_connection returns once each is in
    the backlog) and, with a deadline far away, are never expired: a master
    that served them in turn would never reach the rank."""
    from strangers import Strangers
    monkeypatch.setattr("libdsm_services.master.HANDSHAKE_TIMEOUT", 3600.0)
    result = {}
    with Strangers() as s:
        s.all_kinds(("127.0.0.1", master.port))
        start(rank_side, master.port, master.secret, 0, None, result)   # ends at the close
        reg = None
        while reg is None:
            try:
                reg = drive(master)
            except Refused:
                pass
        assert reg.rank == 0
        assert master.pending, "the idle stranger is still waiting: it held nothing up"


@pytest.mark.parametrize("kind, reason", [
    ("huge", "control message of 4294967295 bytes exceeds 16777216"),
    ("json", "bad control message body"),
    ("type", "unknown control message type 77"),
    ("short", r"expected 40 bytes of message body, got 3"),
])
def test_a_peer_with_the_secret_and_a_bad_first_message_is_refused(master, kind, reason):
    frames = {"huge": wire.Message.HEADER.pack(wire.Message.REGISTER, 0xFFFFFFFF),
              "json": wire.Message.HEADER.pack(wire.Message.REGISTER, 3) + b"{x}",
              "type": wire.Message.HEADER.pack(77, 2) + b"{}",
              "short": wire.Message.HEADER.pack(wire.Message.REGISTER, 40) + b"{\"r"}

    def rank():
        with wire.connect("127.0.0.1", master.port, TIMEOUT) as s:
            wire.handshake(s, master.secret, wire.ROLE_CONNECT, 0)
            s.sendall(frames[kind])
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
    t = start(rank)
    with pytest.raises(Refused, match=reason):
        drive(master)
    t.join(TIMEOUT)
    assert master.pending == {} and master.registrations == {}


def test_receive_reads_messages_then_none_at_close(master):
    a, b = socket.socketpair()
    master.conns[0] = b
    wire.Message(wire.Message.INIT).to_io(a)
    wire.Message(wire.Message.FINALIZED).to_io(a)
    a.close()
    assert master.receive(0) == wire.Message(wire.Message.INIT)
    assert master.receive(0) == wire.Message(wire.Message.FINALIZED)
    assert master.receive(0) is None


def test_beyond_max_pending_the_oldest_handshake_is_dropped(master, monkeypatch):
    monkeypatch.setattr("libdsm_services.master.MAX_PENDING", 2)
    forgotten = []
    master.forget = forgotten.append
    clients = [socket.create_connection(("127.0.0.1", master.port)) for _ in range(3)]
    try:
        fds = []
        while len(fds) < 3:
            select.select([master.sock], [], [], TIMEOUT)
            fd = master.accept()
            if fd is not None:
                fds.append(fd)
        assert forgotten == [fds[0]] and sorted(master.pending) == sorted(fds[1:])
        clients[0].settimeout(TIMEOUT)
        assert len(clients[0].recv(100)) == 26      # our hello, then the close
        assert clients[0].recv(100) == b""
    finally:
        for c in clients:
            c.close()
