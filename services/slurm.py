"""Start the ranks under Slurm: one ``srun`` job step runs every rank.

Inside an allocation (``SLURM_JOB_ID`` set, as under salloc or sbatch), or
with ``--launcher slurm``, dsmexec needs no machine file: the number of
ranks is the allocation's ``SLURM_NTASKS`` (or ``-n``), the hosts come from
``scontrol show hostnames``, and rank N is Slurm task N.  Outside an
allocation, ``--launcher slurm -n N`` runs dsmexec again under ``salloc``.

Each task runs the same bootstrap as an ssh rank (services/rank.py) through
``sh``, which fills in the two things only the node knows: its task number
(``$SLURM_PROCID``) and the address srun was started from
(``$SLURM_LAUNCH_NODE_IPADDR``, Slurm's counterpart of ``$SSH_CLIENT``).
The job secret goes to srun's stdin, which srun hands to every task
(``--input=all``): never to a command line or the environment.

srun labels each output line with its task (``--label``); `Step` cuts the
two streams into lines, gives each rank its ``[rank N] `` prefix, and
reads the exit status of each failed task from srun's own report
("srun: error: node: task 2: Exited with exit code 3").  A task srun does
not report exited 0.  Everything else (registration, verdicts, teardown:
dsmexec closes the connections and the ranks exit by themselves) is the
ssh job's, services/job.py.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time

from services import iomux, machinefile, procs, spawn
from services import job as _job
from services import rank as bootstrap

LAUNCHERS = ("auto", "ssh", "slurm")
DSMEXEC = os.path.join(spawn.REPO_ROOT, "dsmexec.py")
FINISH_WAIT = 5.0
"""Seconds srun gets to end once every rank was judged and the connections closed."""

TASK_SCRIPT = ('exec "$0" -u -m services.rank --rank "$SLURM_PROCID" '
               '--master "$SLURM_LAUNCH_NODE_IPADDR:%d" "$@"')
"""The task's shell command; $0 is the interpreter, "$@" the program and its arguments."""


class SlurmError(Exception):
    """No usable allocation, or Slurm's tools failed: a message for the user."""


# ---------------------------------------------------------------- the command line

def add_options(parser):
    """dsmexec's Slurm options: --launcher and -n."""
    parser.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                        help="how to start the ranks: ssh (from MACHINE_FILE), slurm (srun; no "
                        "MACHINE_FILE), auto (slurm inside an allocation, else ssh; default)")
    parser.add_argument("-n", dest="ntasks", type=int, metavar="N",
                        help="Slurm: number of ranks (default: the allocation's SLURM_NTASKS)")


def launcher(argv, environ):
    """'slurm' or 'ssh': what --launcher in argv (before the program) and environ choose."""
    choice = "auto"
    for i, word in enumerate(argv):
        if word.startswith("--launcher="):
            choice = word.split("=", 1)[1]
        elif word == "--launcher" and i + 1 < len(argv):
            choice = argv[i + 1]
        elif word.endswith(".py"):
            break                   # the program: what follows is its own
    if choice == "auto":
        return "slurm" if environ.get("SLURM_JOB_ID") else "ssh"
    return choice


# ---------------------------------------------------------------- pure builders

def task_argv(python, port, prog, args):
    """The command of every task: the bootstrap, rank and master filled in on the node."""
    return ["sh", "-c", TASK_SCRIPT % port, python, prog, *args]


def salloc_argv(ntasks, command):
    """The salloc argv that runs `command` in a new allocation of ntasks tasks."""
    return ["salloc", "--quiet", "--ntasks=%d" % ntasks, *command]


def rerun_argv(opts, dsmexec=DSMEXEC, python=sys.executable):
    """dsmexec's own argv again, for inside the allocation salloc makes (job.Options)."""
    return [python, dsmexec, "--launcher", "slurm", "--connect-timeout",
            "%g" % opts.connect_timeout, *(["--no-prefix"] if not opts.prefix else []),
            "--python", opts.python, "-n", str(opts.ntasks), opts.prog, *opts.args]


def srun_argv(ntasks, command):
    """The srun argv of one job step of ntasks tasks running `command` (an argv list)."""
    return ["srun", "--ntasks=%d" % ntasks, "--distribution=block", "--label",
            "--input=all", "--kill-on-bad-exit=0", *command]


def expand_counts(spec):
    """SLURM_TASKS_PER_NODE -> one count per node: '2(x3),1' -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise SlurmError("cannot read SLURM_TASKS_PER_NODE=%r" % spec)
        counts += [int(m[1])] * int(m[2] or 1)
    return counts


def rank_hosts(nodes, counts, ntasks):
    """The node of each rank under block distribution: fill each node in turn."""
    slots = [n for n, c in zip(nodes, counts) for _ in range(c)] or list(nodes)
    return [slots[i % len(slots)] for i in range(ntasks)]


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


# ---------------------------------------------------------------- the allocation

def allocation(environ, ntasks=None, run=subprocess.run):
    """The rank hosts of the current allocation: a list of machinefile.Host, rank order."""
    if not environ.get("SLURM_JOB_ID"):
        raise SlurmError("--launcher slurm needs a Slurm allocation (SLURM_JOB_ID is not set): "
                         "run dsmexec under salloc or in an sbatch script")
    n = ntasks or int(environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS") or 0)
    if n < 1:
        raise SlurmError("the allocation does not say how many tasks it has: give -n N")
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
    try:
        p = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError("scontrol show hostnames %s: %s" % (nodelist, e)) from None
    nodes = p.stdout.split()
    if p.returncode != 0 or not nodes:
        raise SlurmError("scontrol show hostnames %s failed: %s" % (nodelist, p.stderr.strip()))
    counts = expand_counts(environ.get("SLURM_TASKS_PER_NODE", ""))
    return [machinefile.Host(None, node, i, node)
            for i, node in enumerate(rank_hosts(nodes, counts, n))]


# ---------------------------------------------------------------- the job step

class Step:
    """One running srun: its two labelled streams, cut into each rank's prefixed lines.

    ``out``/``err`` are the iomux.Sinks of dsmexec's stdout and stderr.
    """

    def __init__(self, argv, env, cwd, secret, ntasks, out, err, prefix=True):
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
        self.buffers = {fd: [iomux.LineBuffer(b"[rank %d] " % i if prefix else b"",
                                              drop=_ready(i) if fd == self.out_fd else None)
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
            self.sinks[fd].write(self.buffers[fd][task].feed(text + b"\n"))
            return
        exits = parse_exit(line.decode(errors="replace")) if fd == self.err_fd else None
        if exits is not None:
            self.returncodes.update(exits)      # dsmexec names the failure itself
        elif line:
            self.sinks[fd].write(line + b"\n")

    def _eof(self, fd):
        if self.partial[fd]:
            self._line(fd, self.partial[fd])
        for buf in self.buffers[fd]:
            self.sinks[fd].write(buf.flush())
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


# ---------------------------------------------------------------- the job

class SlurmRank(_job.Rank):
    def label(self):
        return "rank %d (host %s, Slurm task %d)" % (self.index, self.host.host, self.index)


class SlurmJob(_job.Job):
    """A job whose ranks are the tasks of one srun step; see the module doc.

    Raises SlurmError from the constructor when there is no usable allocation.
    """

    def __init__(self, opts, out_fd=1, err_fd=2):
        super().__init__(opts, out_fd, err_fd)
        self.ranks = [SlurmRank(r.index, r.host, False) for r in self.ranks]
        self.step = None

    def _hosts(self):
        return allocation(self.opts.environ, self.opts.ntasks)

    def _is_local(self, host):
        return False                # every rank connects from a node: listen on all addresses

    def _start_ssh(self, ranks):
        """The job starts its remote ranks here: all of them, as one srun step."""
        if not ranks or self.teardown is not None:
            for r in ranks:
                r.judged = True
            return
        o = self.opts
        argv = srun_argv(len(ranks), task_argv(o.python, self.master.port, o.prog, o.args))
        try:
            self.step = Step(argv, spawn.local_env(o.environ), o.cwd, self.secret, len(ranks),
                             self.out, self.err, o.prefix)
        except OSError as e:
            for r in ranks:
                r.judged = True
            self._fail(_job.EXIT_LAUNCH, "cannot start srun: %s" % (e.strerror or e))
            return
        self.step.watch(self.loop)
        for r in ranks:
            r.proc = self.step.tasks[r.index]

    def _cleanup(self):
        """srun ends once the connections are closed; its last output is passed on first."""
        if self.step is not None:
            if self.master is not None:
                self._close_all()
            self.step.finish()
        super()._cleanup()


class InNewAllocation:
    """--launcher slurm outside an allocation: run dsmexec again under salloc.

    Inside, it finds the allocation and starts the ranks as always.  A
    SIGTERM is passed on to salloc (which then ends the job); a Ctrl-C at
    the terminal reaches the dsmexec inside, so it is ignored here.
    """

    def __init__(self, opts):
        self.argv = salloc_argv(opts.ntasks, rerun_argv(opts))
        self.opts = opts

    def run(self):
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            proc = subprocess.Popen(self.argv, env=self.opts.environ, cwd=self.opts.cwd)
        except OSError as e:
            sys.stderr.write("dsmexec: cannot run salloc: %s\n" % (e.strerror or e))
            return _job.EXIT_LAUNCH
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda sig, frame: proc.send_signal(sig))
        try:
            return procs.status_of(proc.wait())[0]
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def make_job(opts, out_fd=1, err_fd=2):
    """The job for --launcher slurm: a SlurmJob in an allocation, else InNewAllocation.

    Raises SlurmError for what cannot work (no -n outside an allocation, a
    machine file given).
    """
    if not opts.prog.endswith(".py") and opts.args and opts.args[0].endswith(".py"):
        try:
            machinefile.parse(opts.prog)
        except machinefile.MachineFileError:
            pass
        else:
            raise SlurmError("under Slurm the hosts come from the allocation: give no machine "
                             "file (%s), or use --launcher ssh" % opts.prog)
    if opts.environ.get("SLURM_JOB_ID"):
        return SlurmJob(opts, out_fd, err_fd)
    if not opts.ntasks:
        raise SlurmError("--launcher slurm outside an allocation needs -n N, the number of "
                         "ranks (or run dsmexec under salloc or sbatch)")
    return InNewAllocation(opts)
