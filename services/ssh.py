"""Start ranks over ssh.  The only module that imports pexpect.

Each ssh client runs behind a pty (stdin and stdout) with a separate pipe
as its stderr, so the rank's stderr stays apart from its stdout.  A short
dialogue, written as a table of (pattern, action), waits for the
bootstrap's READY marker and answers with the job secret; prompts, EOF and
a timeout become a `SpawnError` that says which rank, host and machine-file
line failed and why.  The dialogues of all ranks run at once, one thread
each, so N hosts start in about the time of one.

Ranks that share a connection (services/spawn.py: share_groups) wait for
their `ControlMaster` to connect first; a master that fails is the failure
of the first rank of its group.
"""
import os
import re
import select
import signal
import termios
import threading
import time

import pexpect
import ptyprocess

from libdsm_services import rank as bootstrap
from libdsm_services.procs import SshProcess

STDERR_WAIT = 2.0
"""Seconds to wait for ssh's last words on stderr after it failed."""
SOCKET_POLL = 0.01
"""Seconds between two looks for a control master's socket."""


class SpawnError(Exception):
    """A rank could not be started: ``rank``, ``host`` (machinefile.Host), ``reason``."""

    def __init__(self, rank, host, reason):
        self.rank, self.host, self.lineno, self.reason = rank, host, host.lineno, reason
        super().__init__("rank %d: %s" % (rank, reason))


class Interrupted(Exception):
    """The start was abandoned because dsmexec got a signal."""


class _Child(pexpect.spawn):
    """A pexpect child whose fd 2 is a pipe and whose pty does no output processing."""

    def __init__(self, argv, stderr_w):
        self._stderr_w = stderr_w
        super().__init__(argv[0], argv[1:], echo=False, preexec_fn=self._in_child)
        self.ptyproc.delayafterclose = 0.0

    def _spawnpty(self, args, **kwargs):
        # ptyprocess closes every fd above 2 before preexec_fn runs: keep ours.
        return ptyprocess.PtyProcess.spawn(args, pass_fds=(self._stderr_w,), **kwargs)

    def _in_child(self):
        """After fork, before exec: stderr to the pipe; OPOST off, so '\\n' stays '\\n'.

        Doing it on the pty slave here, before ssh runs, leaves no window in
        which output could still be translated.
        """
        os.dup2(self._stderr_w, 2)
        attrs = termios.tcgetattr(1)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(1, termios.TCSANOW, attrs)


class Launch:
    """One ssh rank being started: its rank, machine-file host and child."""

    def __init__(self, rank, host, argv):
        self.rank, self.host, self.argv = rank, host, argv
        r, w = os.pipe()
        try:
            self.child = _Child(argv, w)
        except Exception:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.stderr_fd = r
        self.output = b""       # stdout seen around the READY marker, for the rank's output

    def error(self, reason, detail=""):
        """A SpawnError for this rank; reason may use {host} and {line}; detail is appended."""
        text = reason.format(host=self.host.host, line=self.host.lineno)
        return SpawnError(self.rank, self.host, text + (": " + detail if detail else ""))

    def fail(self, reason, detail=""):
        """Close the child, then return the SpawnError to raise."""
        self.close()
        return self.error(reason, detail)

    def close(self, wait=0.0):
        """Close the child, after letting it exit by itself for up to wait seconds."""
        deadline = time.monotonic() + wait
        while self.child.isalive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.child.close(force=True)

    def stderr_text(self):
        """What ssh wrote on stderr (waits briefly for the pipe to close)."""
        data, deadline = b"", time.monotonic() + STDERR_WAIT
        while time.monotonic() < deadline:
            if not select.select([self.stderr_fd], [], [], deadline - time.monotonic())[0]:
                break
            chunk = os.read(self.stderr_fd, 65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").strip()


# ---------------------------------------------------------------- the dialogue

def _ready(launch, secret, timeout):
    """The bootstrap runs: keep what came around the marker, answer with the secret."""
    launch.output = launch.child.before + launch.child.buffer
    launch.child.buffer = b""
    launch.child.sendline(secret.hex().encode())


def _fails_with(reason):
    """An action that fails the start with a fixed reason."""
    def action(launch, secret, timeout):
        raise launch.fail(reason)
    return action


HOST_KEY_UNKNOWN = ("host key of {host} is not known (line {line}): add it to ~/.ssh/known_hosts "
                    "(ssh {host} once, or ssh-keyscan {host} >> ~/.ssh/known_hosts), or give "
                    "dsmexec -o StrictHostKeyChecking=accept-new to trust it on first use "
                    "(a key that changed: ssh-keygen -R {host} first)")

# What ssh's stderr says when it gave up -> what dsmexec says.  First match wins.
_EOF_CAUSES = [
    (re.compile(r"Permission denied \("),
     "permission denied by {host} (line {line}): the key was refused"),
    (re.compile(r"Could not resolve hostname"), "cannot resolve host {host} (line {line})"),
    (re.compile(r"Host key verification failed"), HOST_KEY_UNKNOWN),
    (re.compile(r"Connection refused"), "{host} refused the connection (line {line})"),
    (re.compile(r"timed out"), "the connection to {host} timed out (line {line})"),
]


def _eof(launch, secret, timeout):
    """ssh ended before the bootstrap ran: say why, from its stderr and exit status."""
    said = launch.stderr_text()
    launch.close(wait=STDERR_WAIT)
    for pattern, reason in _EOF_CAUSES:
        if pattern.search(said):
            raise launch.error(reason)
    raise launch.error("ssh to {host} (line {line}) ended with status %s before the rank "
                       "started" % launch.child.exitstatus, said)


def _timeout(launch, secret, timeout):
    raise launch.fail("{host} did not answer within %g s (line {line})" % timeout)


def dialogue_table(rank):
    """(pattern, action) rows for the start of `rank`; expect() picks the first that matches."""
    marker = re.escape(("%s %d" % (bootstrap.READY, rank)).encode())
    return [
        (re.compile(marker + rb"\r?\n"), _ready),
        (re.compile(rb"\(yes/no(/\[fingerprint\])?\)\?"), _fails_with(HOST_KEY_UNKNOWN)),
        (re.compile(rb"[Pp]assword:"),
         _fails_with("{host} asks for a password (line {line}); set up key authentication")),
        (pexpect.EOF, _eof),
        (pexpect.TIMEOUT, _timeout),
    ]


def converse(launch, secret, timeout):
    """Run the dialogue of one launch; return None or raise SpawnError."""
    table = dialogue_table(launch.rank)
    index = launch.child.expect([pattern for pattern, _ in table], timeout=timeout)
    table[index][1](launch, secret, timeout)


def connect_master(launch, control_path, timeout):
    """Wait until a control master listens on control_path; return None or raise SpawnError.

    The dialogue of a rank without its READY row: the socket appearing is the
    sign that the master connected and authenticated.
    """
    table = dialogue_table(launch.rank)[1:]
    patterns = [pattern for pattern, _ in table]
    deadline = time.monotonic() + timeout
    while not os.path.exists(control_path):
        left = deadline - time.monotonic()
        index = launch.child.expect(patterns, timeout=max(0.0, min(SOCKET_POLL, left)))
        if table[index][0] is pexpect.TIMEOUT and left > SOCKET_POLL:
            continue
        table[index][1](launch, None, timeout)


class ControlMaster:
    """An ssh control master that the ranks in `ranks` share; see spawn.control_master_argv.

    `start_all` starts it (``launch``) and, once it listens, the ranks; the
    job stops it (``proc``, an SshProcess) after the ranks ended, since
    killing it ends every session that goes through it.
    """

    def __init__(self, rank, host, argv, control_path, ranks):
        self.rank, self.host, self.argv = rank, host, argv
        self.control_path, self.ranks = control_path, set(ranks)
        self.launch = self.proc = None
        self.done = threading.Event()       # set once it listens or failed
        self.ok = False


# ---------------------------------------------------------------- all ranks at once

def start_all(specs, secret, timeout, interrupted=lambda: False, masters=()):
    """Start and run every dialogue concurrently; return one SshProcess per spec.

    ``specs`` are (rank, machinefile.Host, ssh argv).  ``masters`` are
    `ControlMaster`s: the ranks of one start once it listens; on success each
    gets its ``proc``.  ``interrupted`` is polled while waiting; when it
    returns true the children are killed and `Interrupted` is raised.  If any
    rank fails, every child is closed and the SpawnError of the lowest
    failing rank is raised.
    """
    run = _Run(secret, timeout)
    gate = {rank: m for m in masters for rank in m.ranks}
    threads = []
    for m in masters:
        if not run.spawn(m, m.rank, m.host, m.argv):
            break
        threads.append(threading.Thread(target=run.connect, args=(m,),
                                        name="ssh-master-%d" % m.rank, daemon=True))
    launches = {}
    for rank, host, argv in specs:
        if run.errors:
            break
        if rank in gate:
            threads.append(threading.Thread(target=run.after_master, daemon=True,
                                            args=(gate[rank], rank, host, argv, launches),
                                            name="ssh-rank-%d" % rank))
        else:
            launch = launches[rank] = run.spawn(None, rank, host, argv)
            if launch:
                threads.append(threading.Thread(target=run.converse, args=(launch,),
                                                name="ssh-rank-%d" % rank, daemon=True))
    if not run.errors:
        for t in threads:
            t.start()
    stopped = _join([t for t in threads if t.is_alive()], run, interrupted)
    if stopped or run.errors:
        run.close_all()
        if stopped:
            raise Interrupted()
        raise run.errors[min(run.errors)]
    for m in masters:
        m.proc = SshProcess(m.launch.child, m.launch.stderr_fd)
    return [SshProcess(launches[rank].child, launches[rank].stderr_fd, launches[rank].output)
            for rank, _, _ in specs]


class _Run:
    """The state of one start_all: every child started so far, the failures by rank."""

    def __init__(self, secret, timeout):
        self.secret, self.timeout = secret, timeout
        self.errors = {}
        self.launches = []
        self.lock = threading.Lock()        # launches, stopped
        self.stopped = False

    def spawn(self, master, rank, host, argv):
        """A new Launch (kept in master.launch if given), or None after filing the failure."""
        with self.lock:
            if self.stopped:
                return None
            try:
                launch = Launch(rank, host, argv)
            except (OSError, pexpect.ExceptionPexpect) as e:
                self.errors[rank] = SpawnError(rank, host, "cannot run %s: %s" % (argv[0], e))
                return None
            self.launches.append(launch)
            if master is not None:
                master.launch = launch
            return launch

    def connect(self, master):
        """Thread body: wait for a control master to listen, then open its gate."""
        try:
            self._guard(master.launch, connect_master, master.launch, master.control_path,
                        self.timeout)
            master.ok = master.rank not in self.errors
        finally:
            master.done.set()

    def after_master(self, master, rank, host, argv, launches):
        """Thread body: once the master listens, start one rank through it and converse."""
        master.done.wait()
        if master.ok:
            launch = launches[rank] = self.spawn(None, rank, host, argv)
            if launch:
                self.converse(launch)

    def converse(self, launch):
        """Thread body: run one dialogue, file its failure under its rank."""
        self._guard(launch, converse, launch, self.secret, self.timeout)

    def _guard(self, launch, step, *args):
        try:
            step(*args)
        except SpawnError as e:
            self.errors[launch.rank] = e
        except Exception as e:      # a pexpect or OS error is still this rank's failure
            self.errors[launch.rank] = launch.fail("ssh to {host} (line {line}) failed", str(e))

    def kill_all(self):
        """SIGKILL every child started so far, and start no more."""
        with self.lock:
            self.stopped = True
            for l in self.launches:
                _kill(l.child.pid)

    def close_all(self):
        with self.lock:
            self.stopped = True
            for l in self.launches:
                l.close()
                os.close(l.stderr_fd)


def _join(threads, run, interrupted):
    """Wait for the threads; kill every child if interrupted() says so.  True if it did."""
    stopped = False
    for t in threads:
        while t.is_alive():
            if not stopped and interrupted():
                stopped = True
                run.kill_all()
            t.join(0.05)
    return stopped


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
