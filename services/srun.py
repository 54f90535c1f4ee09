"""One running srun job step, as dsmexec sees it: the ranks' lines and exit statuses.

srun labels each output line with its task (``--label``); `Step` cuts its
two streams into lines and gives each rank its ``[rank N] `` prefix (the
bootstrap's READY line is dropped, as for every rank).  srun reports each
failed task on its stderr ("srun: error: node: task 2: Exited with exit
code 3"); those lines become the tasks' exit statuses and are not shown,
since dsmexec names the failure itself.  A task srun does not report exited
0.  `Task` is one rank of the step behind the job's RankProcess interface.
"""
import os
import re
import select
import signal
import subprocess
import time

from libdsm_services import iomux, procs
from libdsm_services import rank as bootstrap
from libdsm_services.start import output_paths

FINISH_WAIT = 5.0
"""Seconds srun gets to end once every rank was judged and the connections closed."""

_EXIT_RE = re.compile(r"srun: error: (?P<node>\S+): tasks? (?P<tasks>[\d,-]+): (?P<what>.*)")
_SIGNALS = {signal.strsignal(s): s for s in signal.Signals if signal.strsignal(s)}


def parse_exit(line):
    """srun's report of failed tasks -> {task: returncode (-N for signal N)}, or None."""
    m = _EXIT_RE.fullmatch(line.strip())
    if not m:
        return None
    what = m["what"].replace(" (core dumped)", "")
    code = re.fullmatch(r"Exited with exit code (\d+)", what)
    if code:
        returncode = int(code[1])
    elif what in _SIGNALS:
        returncode = -_SIGNALS[what]
    else:
        return None
    tasks = []
    for part in m["tasks"].split(","):
        first, _, last = part.partition("-")
        tasks += range(int(first), int(last or first) + 1)
    return {t: returncode for t in tasks}


_LABEL_RE = re.compile(rb" *(\d+): ")


def split_label(line):
    """b'2: text' -> (2, b'text'); a line without a task label -> (None, line)."""
    m = _LABEL_RE.match(line)
    return (int(m[1]), line[m.end():]) if m else (None, line)


class Step:
    """One running srun: its two labelled streams, cut into each rank's prefixed lines.

    ``out``/``err`` are the iomux.Sinks of dsmexec's stdout and stderr;
    ``output_dir`` is --output-filename's.
    """

    def __init__(self, argv, env, cwd, secret, ntasks, out, err, prefix=True, output_dir=None):
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=cwd,
                                      start_new_session=True)
        try:
            self.popen.stdin.write(secret.hex().encode() + b"\n")
            self.popen.stdin.close()
        except BrokenPipeError:
            pass                    # srun died at once: its status tells
        self.out_fd, self.err_fd = self.popen.stdout.fileno(), self.popen.stderr.fileno()
        self.sinks = {self.out_fd: out, self.err_fd: err}
        self.partial = {self.out_fd: b"", self.err_fd: b""}     # until end of file
        copies = [output_paths(output_dir, i) for i in range(ntasks)]
        self.streams = {fd: [iomux.Stream(self.sinks[fd], b"[rank %d] " % i if prefix else b"",
                                          drop=_ready(i) if fd == self.out_fd else None,
                                          copy=copies[i][fd == self.err_fd])
                             for i in range(ntasks)] for fd in self.partial}
        self.returncodes = {}       # task -> returncode, from srun's reports
        self.loop = None
        self.tasks = [Task(self, i) for i in range(ntasks)]
        self._sent = set()
        self._closed = False

    def watch(self, loop):
        """Read both streams from the poll loop."""
        self.loop = loop
        for fd in self.partial:
            loop.add(fd, lambda fd, revents: self.read(fd))

    def read(self, fd):
        """Read one chunk of a stream and pass on its whole lines; False at end of file."""
        if fd not in self.partial:
            return False
        data = iomux.read_chunk(fd)
        if not data:
            self._eof(fd)
            return False
        lines = (self.partial[fd] + data).split(b"\n")
        self.partial[fd] = lines.pop()
        for line in lines:
            self._line(fd, line)
        return True

    def _line(self, fd, line):
        """One line of srun's: to its rank, or srun's own (a report of failed tasks is kept)."""
        task, text = split_label(line)
        if task is not None and task < len(self.tasks):
            self.streams[fd][task].write(text + b"\n")
            return
        exits = parse_exit(line.decode(errors="replace")) if fd == self.err_fd else None
        if exits is not None:
            self.returncodes.update(exits)      # dsmexec names the failure itself
        elif line:
            self.sinks[fd].write(line + b"\n")

    def _eof(self, fd):
        if self.partial[fd]:
            self._line(fd, self.partial[fd])
        for stream in self.streams[fd]:
            stream.close()
        del self.partial[fd]
        if self.loop is not None:
            self.loop.remove(fd)

    def drain(self):
        """Once srun has exited: read both streams to the end (no one else writes them)."""
        if self.popen.poll() is not None:
            for fd in list(self.partial):
                while self.read(fd):
                    pass

    def returncode_of(self, task):
        """A task's returncode (-N: signal N) once known, else None."""
        if task in self.returncodes:
            return self.returncodes[task]
        self.drain()
        rc = self.popen.returncode
        if rc is None or self.partial:
            return None
        if rc == 0 or (rc > 0 and self.returncodes):
            return 0                # srun names every task that failed
        return rc                   # srun itself failed or was killed: so did the task

    def signal(self, sig):
        """Send sig to srun once (it passes SIGTERM on to every task)."""
        if sig not in self._sent and self.popen.poll() is None:
            self._sent.add(sig)
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, wait=FINISH_WAIT):
        """Let srun end, passing its output on; after wait s SIGTERM, later SIGKILL."""
        for sig, limit in ((None, wait), (signal.SIGTERM, procs.TERM_GRACE),
                           (signal.SIGKILL, None)):
            if sig is not None:
                self.signal(sig)
            if self._pump(limit):
                break
        self.drain()

    def _pump(self, limit):
        """Pass output on until srun exits (True) or limit s (None: no limit) pass (False)."""
        deadline = None if limit is None else time.monotonic() + limit
        while self.popen.poll() is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            if not self.partial:
                time.sleep(left)
            for fd in select.select(list(self.partial), [], [], left)[0] if self.partial else ():
                self.read(fd)
        return True

    def close(self):
        if not self._closed:
            self._closed = True
            self.popen.stdout.close()
            self.popen.stderr.close()


def _ready(rank):
    """The bootstrap's READY line of a rank, which its output does not show."""
    return ("%s %d" % (bootstrap.READY, rank)).encode()


class Task(procs.RankProcess):
    """One rank as the job sees it: a task of the shared srun step."""

    def __init__(self, step, task):
        super().__init__()
        self.step, self.task = step, task
        self.pid = step.popen.pid

    def _returncode(self):
        return self.step.returncode_of(self.task)

    def signal_group(self, sig):
        self.step.signal(sig)

    def kill_leftovers(self):
        self.step.signal(signal.SIGKILL)

    def close(self):
        self.step.close()
