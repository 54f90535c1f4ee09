"""The rank processes dsmexec starts: one interface for local and ssh ranks.

A `RankProcess` has a ``pid``, a ``stdout_fd`` and a ``stderr_fd`` for the
poll loop, ``poll()`` for its exit status, ``signal_group()`` and
``close()``.  Each rank is the leader of its own session (a local rank
through ``start_new_session``, an ssh rank through its pty), so a signal to
its process group reaches whatever the rank started too, and a Ctrl-C at
the terminal reaches only dsmexec, which then tears the job down.  On the
remote side an ssh rank runs in a group of its own under a supervisor
(services/rank.py), which stops that group when dsmexec's connection
closes and reports the rank's real status.

Exit status convention: a rank's status is its exit code, or 128 + the
signal number if a signal killed it.
"""
import os
import signal
import subprocess
import time

TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL in a bounded shutdown."""


def status_of(returncode):
    """A subprocess returncode -> (status, signal or None)."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def describe(status, sig):
    """'exited with status 3' or 'was killed by signal 11 (SIGSEGV)'."""
    if sig is None:
        return "exited with status %d" % status
    try:
        name = " (%s)" % signal.Signals(sig).name
    except ValueError:
        name = ""
    return "was killed by signal %d%s" % (sig, name)


class RankProcess:
    """Base: what the job needs of a rank process.  Subclasses fill `_returncode`."""

    pid = stdout_fd = stderr_fd = None
    early_output = b""
    """Stdout the rank wrote before its fd went to the poll loop (ssh dialogue)."""

    def __init__(self):
        self.status = None      # exit status (convention above), None while running
        self.signal = None      # the signal that killed it, if any

    def poll(self):
        """The exit status if the process has ended (it is then reaped), else None."""
        if self.status is None:
            rc = self._returncode()
            if rc is not None:
                self.status, self.signal = status_of(rc)
        return self.status

    def signal_group(self, sig):
        """Send sig to the rank's process group, if the rank still runs."""
        if self.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill_leftovers(self):
        """SIGKILL what is left in the rank's process group: whatever the rank started.

        Call it once the job is over, right after the rank was reaped.
        """
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _returncode(self):
        raise NotImplementedError

    def close(self):
        """Release the fds (after the process was reaped)."""
        raise NotImplementedError


class LocalProcess(RankProcess):
    """A rank on this machine: a subprocess with pipes.

    The job secret is written to its stdin right after the start, then stdin
    is closed; the READY marker it prints stays on stdout for the output
    layer to drop.
    """

    def __init__(self, argv, env, cwd, secret):
        super().__init__()
        self._popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, env=env, cwd=cwd,
                                       start_new_session=True)
        self.pid = self._popen.pid
        self.stdout_fd = self._popen.stdout.fileno()
        self.stderr_fd = self._popen.stderr.fileno()
        try:
            self._popen.stdin.write(secret.hex().encode() + b"\n")
            self._popen.stdin.close()
        except BrokenPipeError:
            pass                # it died at once: its exit status will tell

    def _returncode(self):
        return self._popen.poll()

    def close(self):
        for f in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            try:
                f.close()
            except OSError:
                pass


class SshProcess(RankProcess):
    """A rank reached with ssh: the local ssh client behind a pty.

    ``child`` is a started pexpect child (duck-typed: pid, child_fd, isalive(),
    exitstatus, signalstatus, close()) whose dialogue is over; stdout is its
    pty, stderr the pipe given to it as fd 2.
    """

    def __init__(self, child, stderr_fd, early_output=b""):
        super().__init__()
        self.early_output = early_output
        self._child = child
        self.pid = child.pid
        self.stdout_fd = child.child_fd
        self.stderr_fd = stderr_fd

    def _returncode(self):
        if self._child.isalive():
            return None
        if self._child.signalstatus is not None:
            return -self._child.signalstatus
        return self._child.exitstatus

    def close(self):
        try:
            self._child.close(force=True)
        except Exception:       # pexpect raises its own types; the fd is gone either way
            pass
        try:
            os.close(self.stderr_fd)
        except OSError:
            pass


class Janitor:
    """Removes a directory once dsmexec is done with it, or gone (even by SIGKILL).

    A ``sh`` in a session of its own waits for the end of a pipe whose write
    end only dsmexec holds, then runs ``rm -rf``.  `close` lets it go at once.
    """

    def __init__(self, path):
        self._popen = subprocess.Popen(
            ["sh", "-c", 'cat >/dev/null; exec rm -rf -- "$1"', "dsm-janitor", path],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def close(self, wait=1.0):
        """dsmexec is done: the janitor removes the directory now; wait for it a little."""
        self._popen.stdin.close()
        try:
            self._popen.wait(wait)
        except subprocess.TimeoutExpired:
            pass                # it finishes by itself


def shutdown(procs, grace=TERM_GRACE):
    """Bounded stop of every process still running: SIGTERM, wait up to grace s, SIGKILL, reap.

    Blocking; for the paths that cannot keep the poll loop running.
    """
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.poll() is None for p in alive):
        time.sleep(0.02)
    reap(alive)


def reap(procs):
    """SIGKILL whatever still runs and wait for it: afterwards nothing is left."""
    for p in procs:
        p.signal_group(signal.SIGKILL)
    for p in procs:
        while p.poll() is None:
            time.sleep(0.01)
