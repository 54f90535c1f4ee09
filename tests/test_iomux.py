"""Whole-line output, the poll loop and signal wake-ups (services/iomux.py)."""
import os
import signal

from libdsm_services import iomux
from libdsm_services.iomux import LineBuffer


def test_only_whole_lines_come_out_prefixed():
    b = LineBuffer(b"[rank 1] ")
    assert b.feed(b"hel") == b""
    assert b.feed(b"lo\nwor") == b"[rank 1] hello\n"
    assert b.feed(b"ld\n\nx\n") == b"[rank 1] world\n[rank 1] \n[rank 1] x\n"
    assert b.flush() == b""


def test_a_final_partial_line_gets_a_newline():
    b = LineBuffer(b"> ")
    b.feed(b"a\nno newline")
    assert b.flush() == b"> no newline\n"
    assert b.flush() == b""


def test_the_ready_marker_is_dropped_only_as_first_line():
    b = LineBuffer(b"", drop=b"DSMEXEC-READY 2")
    assert b.feed(b"DSMEXEC-READ") == b""
    assert b.feed(b"Y 2\nDSMEXEC-READY 2\n") == b"DSMEXEC-READY 2\n"


def test_a_different_first_line_is_kept():
    b = LineBuffer(b"", drop=b"DSMEXEC-READY 2")
    assert b.feed(b"DSMEXEC-READY 3\n") == b"DSMEXEC-READY 3\n"


def test_pty_carriage_returns_are_stripped():
    b = LineBuffer(b"", strip_cr=True)
    assert b.feed(b"a\r\nb\r\n") == b"a\nb\n"
    assert LineBuffer(b"").feed(b"a\r\n") == b"a\r\n"


def test_an_endless_line_is_emitted_in_pieces(monkeypatch):
    monkeypatch.setattr(iomux, "MAX_LINE", 8)
    b = LineBuffer(b"")
    assert b.feed(b"x" * 20) == b"x" * 20 + b"\n"


def test_eio_from_a_closed_pty_reads_as_eof():
    master, slave = os.openpty()
    os.write(slave, b"last\n")
    os.close(slave)
    got = b""
    while True:
        chunk = iomux.read_chunk(master)
        if not chunk:
            break
        got += chunk
    os.close(master)
    assert got.replace(b"\r", b"") == b"last\n"


def test_sink_survives_a_broken_pipe():
    r, w = os.pipe()
    os.close(r)
    sink = iomux.Sink(w)
    sink.write(b"x\n")
    assert sink.broken
    sink.write(b"y\n")      # muted, no exception
    os.close(w)


def test_loop_dispatches_ready_fds_and_forgets_removed_ones():
    loop, seen = iomux.Loop(), []
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        loop.add(r1, lambda fd, ev: seen.append(os.read(fd, 10)))
        loop.add(r2, lambda fd, ev: seen.append(os.read(fd, 10)))
        os.write(w1, b"one")
        loop.run_once(1.0)
        assert seen == [b"one"]
        loop.remove(r2)
        loop.remove(r2)         # harmless twice
        assert r2 not in loop and r1 in loop
        os.write(w2, b"two")
        loop.run_once(0.05)
        assert seen == [b"one"]
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_signals_become_readable_bytes():
    old = signal.getsignal(signal.SIGTERM)
    with iomux.SignalWake() as wake:
        loop, fired = iomux.Loop(), []
        loop.add(wake.fd, lambda fd, ev: fired.extend(wake.drain()))
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGCHLD)
        loop.run_once(2.0)
        assert fired == [signal.SIGTERM, signal.SIGCHLD]
        assert wake.drain() == []
    assert signal.getsignal(signal.SIGTERM) is old
