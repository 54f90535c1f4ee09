"""I/O multiplexing for dsmexec: one poll loop, whole-line output, signal wake-ups.

* `Loop` is the single ``select.poll`` loop: file descriptors with a
  handler each (the master socket, the rank connections, every rank's
  stdout and stderr, the signal wake-up pipe).
* `LineBuffer` cuts one stream of one rank into whole lines with the
  ``[rank N] `` prefix; `Sink` writes them, each batch with one write, so a
  line is never split or mixed with another rank's.  `Stream` is one
  rank's stream: to the terminal prefixed, and to a file of its own as
  written (--output-filename).
* `SignalWake` turns SIGINT, SIGTERM, SIGHUP and SIGCHLD into bytes on a pipe the
  loop polls (``signal.set_wakeup_fd``), so no signal is lost between polls.
"""
import errno
import os
import select
import signal

READ_SIZE = 65536
MAX_LINE = 1 << 20
"""A line longer than this (1 MiB) is emitted in pieces rather than held forever."""

WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)


def read_chunk(fd):
    """Read what is there; b"" at end of file (EIO from a closed pty counts as EOF)."""
    try:
        return os.read(fd, READ_SIZE)
    except OSError as e:
        if e.errno == errno.EIO:
            return b""
        raise


def write_all(fd, data):
    """Write all of data to fd (a short write is continued, never interleaved by us)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


TRACEBACK = b"Traceback (most recent call last):"
MAX_BLOCK = 1000
"""Most lines of a traceback held back to be passed on in one piece."""


class LineBuffer:
    """Cuts one output stream into whole, prefixed lines.

    ``drop`` is one line (without newline) removed the first time it appears
    as the stream's first line: the bootstrap's READY marker.  With
    ``strip_cr`` a trailing ``\\r`` is taken off each line (pty output).
    A Python traceback (from its ``Traceback`` line to the first line that
    is not indented: the exception) is held back and passed on whole, so
    no other rank's line lands inside it, however it was cut on the way.
    """

    def __init__(self, prefix=b"", drop=None, strip_cr=False):
        self.prefix, self.drop, self.strip_cr = prefix, drop, strip_cr
        self._partial = b""
        self._first = True
        self._block = None          # the lines of a traceback so far

    def feed(self, data):
        """Add data; return the complete lines it finished, prefixed, as one bytes."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        return b"".join(self._pass(line) for line in lines if not self._dropped(line))

    def flush(self):
        """At end of file: a held traceback and the last partial line with a newline added."""
        rest, self._partial = self._partial, b""
        held, self._block = b"".join(self._block or ()), None
        return held + (self._format(rest) if rest and not self._dropped(rest) else b"")

    def _pass(self, line):
        """What one whole line lets out: nothing while a traceback is held, else lines."""
        text = line.rstrip(b"\r")
        if self._block is None:
            if text != TRACEBACK:
                return self._format(line)
            self._block = []
        self._block.append(self._format(line))
        if (text[:1] not in (b" ", b"\t", b"") and text != TRACEBACK) or \
                len(self._block) >= MAX_BLOCK:
            block, self._block = b"".join(self._block), None
            return block
        return b""

    def _dropped(self, line):
        first, self._first = self._first, False
        return first and self.drop is not None and line.rstrip(b"\r") == self.drop

    def _format(self, line):
        if self.strip_cr and line.endswith(b"\r"):
            line = line[:-1]
        return self.prefix + line + b"\n"


class Sink:
    """Where lines go (dsmexec's stdout or stderr); a broken pipe or a terminal that hung
    up (EIO) mutes it, not the job."""

    def __init__(self, fd):
        self.fd = fd
        self.broken = False

    def write(self, data):
        if data and not self.broken:
            try:
                write_all(self.fd, data)
            except OSError as e:
                if not isinstance(e, BrokenPipeError) and e.errno != errno.EIO:
                    raise
                self.broken = True


class Stream:
    """One stream of one rank: whole lines to `sink` with the prefix, and, with a
    `copy` path, the same lines without it to that file (created afresh)."""

    def __init__(self, sink, prefix=b"", drop=None, strip_cr=False, copy=None):
        self.sink, self.lines = sink, LineBuffer(prefix, drop, strip_cr)
        self.copy = self.plain = None
        if copy is not None:
            self.copy = Sink(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
            self.plain = LineBuffer(b"", drop, strip_cr)

    def write(self, data):
        """Pass on the whole lines data completes."""
        self.sink.write(self.lines.feed(data))
        if self.copy is not None:
            self.copy.write(self.plain.feed(data))

    def close(self):
        """At end of file: the last partial line; the copy's file is closed."""
        self.sink.write(self.lines.flush())
        if self.copy is not None:
            self.copy.write(self.plain.flush())
            os.close(self.copy.fd)
            self.copy = None


class Loop:
    """One poll loop: ``add(fd, handler)``; ``run_once`` calls ``handler(fd, revents)``."""

    def __init__(self):
        self._poll = select.poll()
        self._handlers = {}

    def add(self, fd, handler, events=select.POLLIN):
        self._handlers[fd] = handler
        self._poll.register(fd, events)

    def remove(self, fd):
        """Stop watching fd (harmless if it is not watched)."""
        if self._handlers.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def __contains__(self, fd):
        return fd in self._handlers

    def run_once(self, timeout):
        """Wait up to timeout seconds (None: forever) and dispatch what is ready."""
        ms = None if timeout is None else max(0, int(timeout * 1000))
        for fd, revents in self._poll.poll(ms):
            handler = self._handlers.get(fd)
            if handler is not None:         # an earlier handler may have removed it
                handler(fd, revents)


class SignalWake:
    """Context manager: route WATCHED_SIGNALS to a pipe the loop polls.

    Inside, ``fd`` is readable whenever a signal arrived and ``drain()``
    returns the signal numbers received since the last call.  The previous
    handlers and wake-up fd are restored on exit.  Main thread only.
    """

    def __init__(self, signals=WATCHED_SIGNALS):
        self.signals = signals
        self.fd = None

    def __enter__(self):
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        # The handler does nothing: the C-level handler already wrote the
        # signal number to the pipe, which is all the loop needs.
        self._old = {s: signal.signal(s, lambda signum, frame: None) for s in self.signals}
        return self

    def drain(self):
        """The signal numbers that arrived since the last drain (in order)."""
        got = b""
        while True:
            try:
                chunk = os.read(self.fd, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += chunk
        return list(got)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self.fd)
        os.close(self._w)
        return False
