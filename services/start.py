"""How a dsmexec job starts its ranks: the options, the checks before any rank
starts, local and ssh ranks, and each rank's output streams.

`Starting` is the start-up half of services/job.py's Job (services/slurm.py
replaces its `_start_ssh` with one srun step).  A problem found before any
rank starts (a missing program or --wdir for local ranks) is a
`LaunchError`: one message from dsmexec instead of one traceback per rank.
"""
import functools
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from libdsm_services import iomux, machinefile, procs, spawn, ssh
from libdsm_services import rank as bootstrap
from libdsm_services.master import Master

EXIT_LAUNCH = 1
REGISTER_SLACK = 5.0
"""Seconds beyond --connect-timeout that ranks get to register."""
EXIT_TIMEOUT = 124
"""--timeout ran out: the job was stopped (as timeout(1) says it)."""


class LaunchError(Exception):
    """The job cannot start: a message for the user, found before any rank started."""


@dataclass
class Options:
    """What dsmexec was asked to run, and how."""
    machine_file: Optional[str]
    prog: str                       # a file, or with `module` a module name (-m)
    args: list = field(default_factory=list)
    module: bool = False
    hosts: Optional[list] = None    # machinefile.Host by rank, checked by services/cli.py
    ssh_all: bool = False
    ssh_options: list = field(default_factory=list)
    identity: Optional[str] = None
    connect_timeout: float = 10.0
    prefix: bool = True
    python: str = sys.executable
    cwd: str = field(default_factory=os.getcwd)
    environ: dict = field(default_factory=lambda: dict(os.environ))
    launcher: str = "ssh"           # or "slurm": services/slurm.py, no machine file
    ntasks: Optional[int] = None    # -n: the number of ranks
    exports: dict = field(default_factory=dict)     # -x: variables every rank gets
    output_dir: Optional[str] = None    # --output-filename: rank.N.stdout/.stderr there
    timeout: Optional[float] = None     # --timeout: seconds before the job is stopped
    report: object = None           # report.Collector: --trace, --stats
    restart: object = None          # restart.Policy: --restarts, --checkpoint-dir


class Rank:
    """The job's view of one rank: where it runs, its process, streams and verdict."""

    def __init__(self, index, host, local):
        self.index, self.host, self.local = index, host, local
        self.proc = None
        self.streams = {}           # fd -> iomux.Stream, until EOF
        self.init = self.finalized = False
        self.lost_peer = False      # it failed because another rank went away
        self.said_last = False      # it answered ENDING: its last words are out (ENDED)
        self.reported = None        # (status, signal) from its supervisor (ssh ranks)
        self.exited_at = None
        self.judged = False

    def label(self):
        if self.host.lineno is None:        # no machine file: -n N local ranks
            return "rank %d (host %s)" % (self.index, self.host.host)
        return "rank %d (host %s, line %d)" % (self.index, self.host.host, self.host.lineno)


def local_hosts(n):
    """The ranks of -n N without a machine file: N on this machine."""
    return [machinefile.Host(None, "localhost", None, "localhost")] * n


def check(opts, ranks):
    """What can be checked here before a rank starts (services/cli.py checked the
    program): the working directory of the local ranks; makes --output-filename's
    DIR.  Raises LaunchError."""
    if opts.output_dir is not None:
        try:
            os.makedirs(opts.output_dir, exist_ok=True)
        except OSError as e:
            raise LaunchError("--output-filename %s: %s" % (opts.output_dir, e.strerror or e))
    if not any(r.local for r in ranks):
        return          # elsewhere the rank bootstrap says so, once (services/rank.py)
    if not os.path.isdir(opts.cwd):
        raise LaunchError("working directory %s: no such directory" % opts.cwd)


def output_paths(output_dir, index):
    """--output-filename: (stdout file, stderr file) of rank `index`, or (None, None)."""
    if output_dir is None:
        return None, None
    return tuple(os.path.join(output_dir, "rank.%d.%s" % (index, s)) for s in ("stdout", "stderr"))


def streams(index, out, err, opts, strip_cr=False, ready=True):
    """The iomux.Streams of rank `index`'s stdout and stderr (without the READY line)."""
    prefix = b"" if not opts.prefix else b"[rank %d] " % index
    drop = ("%s %d" % (bootstrap.READY, index)).encode() if ready else None
    copies = output_paths(opts.output_dir, index)
    return (iomux.Stream(out, prefix, drop, strip_cr, copies[0]),
            iomux.Stream(err, prefix, copy=copies[1]))


class Starting:
    """The start-up methods of a Job."""

    def _start(self):
        """Listen, start the local ranks, then the ssh ranks (concurrently)."""
        self.master = Master(self.secret, len(self.ranks),
                             bind_all=any(not r.local for r in self.ranks), forget=self.loop.remove)
        self.loop.add(self.signals.fd, self._on_signal)
        self.loop.add(self.master.sock.fileno(), self._on_accept)
        self.register_deadline = time.monotonic() + self.opts.connect_timeout + REGISTER_SLACK
        for r in self.ranks:
            if r.local:
                self._start_local(r)
        self._start_ssh([r for r in self.ranks if not r.local])

    def _start_local(self, rank):
        """Start one local rank; a failure to start is the job's failure."""
        o = self.opts
        all_local = all(r.local for r in self.ranks)
        argv = spawn.rank_argv(o.python, rank.index, spawn.local_master(self.master.port),
                               o.prog, o.args, listen="127.0.0.1" if all_local else None,
                               module=o.module)
        if self.teardown is not None:       # an earlier rank failed to start: stop here
            rank.judged = True
            return
        try:
            proc = procs.LocalProcess(argv, spawn.local_env(o.environ, exports=o.exports),
                                      o.cwd, self.secret)
        except OSError as e:
            rank.judged = True
            self._fail(EXIT_LAUNCH, "%s: cannot start %s: %s" % (rank.label(), o.python,
                                                                 e.strerror or e))
            return
        self._attach(rank, proc)

    def _none_to_start(self, ranks):
        """True, with `ranks` judged, when there is nothing to start: none, or the job ends."""
        if ranks and self.teardown is None:
            return False
        for r in ranks:
            r.judged = True
        return True

    def _start_ssh(self, ranks):
        if self._none_to_start(ranks):
            return
        o = self.opts
        env = spawn.remote_env(o.environ, exports=o.exports)
        paths = self._plan_sharing(ranks)
        specs = [(r.index, r.host, spawn.ssh_argv(
            r.host, spawn.rank_argv(o.python, r.index, spawn.ssh_master(self.master.port),
                                    o.prog, o.args, supervise=True, module=o.module),
            o.ssh_options, o.identity, o.connect_timeout, env, o.cwd,
            control_path=paths.get(r.index))) for r in ranks]
        try:
            started = ssh.start_all(specs, self.secret, o.connect_timeout, self._interrupted,
                                    self.control_masters)
        except (ssh.SpawnError, ssh.Interrupted) as e:
            for r in ranks:
                r.judged = True
            if isinstance(e, ssh.SpawnError):
                self._fail(EXIT_LAUNCH, str(e))
            return
        for r, proc in zip(ranks, started):
            self._attach(r, proc)

    def _plan_sharing(self, ranks):
        """Make a control master for each group of ranks that share a connection.

        Returns {rank index: control path} for the ranks that use one.
        """
        groups = spawn.share_groups([r.host for r in ranks], self.opts.ssh_options)
        if not groups:
            return {}
        self.control_dir = tempfile.mkdtemp(prefix="dsm-ssh-")
        self.janitor = procs.Janitor(self.control_dir)     # removes it if we are killed
        sockets = [spawn.control_path(self.control_dir, n) for n in range(len(groups))]
        if None in sockets:         # $TMPDIR is too long for a socket path: no sharing
            return {}
        o, paths = self.opts, {}
        for path, members in zip(sockets, groups):
            first = ranks[members[0]]
            self.control_masters.append(ssh.ControlMaster(
                first.index, first.host,
                spawn.control_master_argv(first.host, path, o.ssh_options, o.identity,
                                          o.connect_timeout),
                path, [ranks[i].index for i in members]))
            paths.update((ranks[i].index, path) for i in members)
        return paths

    def _attach(self, rank, proc):
        """Put a started rank's stdout and stderr into the loop."""
        rank.proc = proc
        out, err = streams(rank.index, self.out, self.err, self.opts, strip_cr=not rank.local,
                           ready=rank.local)
        rank.streams = {proc.stdout_fd: out, proc.stderr_fd: err}
        for fd in rank.streams:
            self.loop.add(fd, functools.partial(self._on_output, rank))
        out.write(proc.early_output)
