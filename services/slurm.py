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

A restart (--restarts, services/restart.py) leaves out the node whose rank
failed: its ranks go to the allocation's other nodes, and the step places
every task where dsmexec says (SLURM_HOSTFILE, --distribution=arbitrary).

services/srun.py turns srun's labelled output back into each rank's lines
and exit status.  Everything else (registration, verdicts, teardown:
dsmexec closes the connections and the ranks exit by themselves) is the
ssh job's, services/job.py.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile

from libdsm_services import machinefile, procs, spawn, srun
from libdsm_services import job as _job

LAUNCHERS = ("auto", "ssh", "slurm")
DSMEXEC = ["-m", "libdsm_services"]
"""dsmexec as the interpreter's arguments: the same in a checkout and installed."""

TASK_SCRIPT = ('exec "$0" -u -m libdsm_services.rank --rank "$SLURM_PROCID" '
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
    parser.add_argument("-n", "-np", dest="ntasks", type=int, metavar="N",
                        help="number of ranks: without MACHINE_FILE, N ranks here; with it, "
                        "its first N slots; under Slurm (default: the allocation's "
                        "SLURM_NTASKS)")


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


def salloc_argv(ntasks, command, no_kill=False):
    """The salloc argv that runs `command` in a new allocation of ntasks tasks;
    no_kill: one that outlives a node's failure (for --restarts without it)."""
    return ["salloc", "--quiet", "--ntasks=%d" % ntasks, *(["--no-kill"] if no_kill else []),
            *command]


def rerun_argv(opts, dsmexec=DSMEXEC, python=sys.executable):
    """dsmexec's own argv again, for inside the allocation salloc makes (job.Options)."""
    optional = [*(["--no-prefix"] if not opts.prefix else []),
                *(["--timeout", "%g" % opts.timeout] if opts.timeout is not None else []),
                *(["--output-filename", opts.output_dir] if opts.output_dir else []),
                *[w for kv in opts.exports.items() for w in ("-x", "%s=%s" % kv)],
                *_restart_words(opts.restart)]
    return [python, *dsmexec, "--launcher", "slurm", "--connect-timeout",
            "%g" % opts.connect_timeout, *optional, "--python", opts.python,
            "--wdir", opts.cwd, "-n", str(opts.ntasks), *(["-m"] if opts.module else []),
            opts.prog, *opts.args]


def _restart_words(policy):
    """--restarts and --checkpoint-dir again, for the dsmexec inside (which restarts)."""
    if policy is None:
        return []
    return [*(["--restarts", "%d" % policy.restarts] if policy.restarts else []),
            *(["--checkpoint-dir", policy.directory] if policy.directory else [])]


def srun_argv(ntasks, command, placed=False):
    """The srun argv of one job step of ntasks tasks running `command` (an argv
    list).  placed: each task goes to the node the SLURM_HOSTFILE lists for it
    (a restart that leaves a node out), even past the CPUs it has there, and
    shares them with the failed step (--overlap): a step with a task on a
    dead node holds its CPUs on every node until slurmctld declares that
    node down (SlurmdTimeout, 300 s by default), though its tasks there ended."""
    layout = ["--distribution=arbitrary", "--overcommit", "--overlap"] if placed else \
        ["--distribution=block"]
    return ["srun", "--ntasks=%d" % ntasks, *layout, "--label", "--input=all",
            "--kill-on-bad-exit=0", *command]


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


# ---------------------------------------------------------------- the allocation

def allocation(environ, ntasks=None, run=subprocess.run, exclude=()):
    """The rank hosts of the current allocation: a list of machinefile.Host, rank
    order; without the nodes in exclude (their ranks fill the others in turn)."""
    if not environ.get("SLURM_JOB_ID"):
        raise SlurmError("--launcher slurm needs a Slurm allocation (SLURM_JOB_ID is not set): "
                         "run dsmexec under salloc or in an sbatch script")
    n = ntasks or int(environ.get("SLURM_NTASKS") or environ.get("SLURM_NPROCS") or 0)
    if n < 1:
        raise SlurmError("the allocation does not say how many tasks it has: give -n N")
    if n > machinefile.MAX_RANKS:
        raise SlurmError("the allocation has %d tasks, but a job has at most %d ranks: give "
                         "-n N" % (n, machinefile.MAX_RANKS))
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
    kept = [(node, count) for node, count in zip(nodes, counts) if node not in exclude]
    if exclude and not kept:
        raise SlurmError("every node of the allocation (%s) is left out" % " ".join(nodes))
    if exclude:
        nodes, counts = [k for k, _ in kept], [c for _, c in kept]
    return [machinefile.Host(None, node, i, node)
            for i, node in enumerate(rank_hosts(nodes, counts, n))]


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
        self.hostfile = None        # SLURM_HOSTFILE of a step that leaves nodes out

    def _excluded(self):
        """The nodes a restart leaves out (restart.Policy.excluded)."""
        return self.opts.restart.excluded if self.opts.restart is not None else set()

    def _hosts(self):
        return allocation(self.opts.environ, self.opts.ntasks, exclude=self._excluded())

    def _is_local(self, host):
        return False                # every rank connects from a node: listen on all addresses

    def _start_ssh(self, ranks):
        """The job starts its remote ranks here: all of them, as one srun step."""
        if self._none_to_start(ranks):
            return
        o = self.opts
        words = spawn.program_words(o.prog, o.module)
        argv = srun_argv(len(ranks), task_argv(o.python, self.master.port, words[0],
                                               words[1:] + o.args), bool(self._excluded()))
        env = spawn.local_env(o.environ, exports=o.exports)
        if self._excluded():                # each task on the node dsmexec names for it
            fd, self.hostfile = tempfile.mkstemp(prefix="dsm-hostfile-")
            with os.fdopen(fd, "w") as f:
                f.write("".join(r.host.host + "\n" for r in ranks))
            env["SLURM_HOSTFILE"] = self.hostfile
        try:
            self.step = srun.Step(argv, env, o.cwd, self.secret, len(ranks), self.out,
                                  self.err, o.prefix, o.output_dir)
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
        if self.hostfile is not None:
            os.unlink(self.hostfile)
            self.hostfile = None
        super()._cleanup()


class InNewAllocation:
    """--launcher slurm outside an allocation: run dsmexec again under salloc.

    Inside, it finds the allocation and starts the ranks as always.  A
    SIGTERM is passed on to salloc (which then ends the job); a Ctrl-C at
    the terminal reaches the dsmexec inside, so it is ignored here.
    """

    def __init__(self, opts):
        self.argv = salloc_argv(opts.ntasks, rerun_argv(opts),
                                no_kill=opts.restart is not None and opts.restart.restarts > 0)
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
