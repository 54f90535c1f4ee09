"""dsmexec --restarts K and --checkpoint-dir DIR: run the job again after a failure.

The ranks save checkpoints themselves (libdsm/checkpoint.py, docs/checkpoint.md);
dsmexec names where, and relaunches.  Every rank gets DSM_CHECKPOINT_JOB,
a name for this dsmexec run that stays the same over its restarts (buddy
memory lives in /dev/shm/dsm-ckpt-JOB-HOST on each host), DSM_CHECKPOINT_DIR
with --checkpoint-dir, and on a restart DSM_CHECKPOINT_RESTART=N, which
makes the ranks' init() restore the newest complete generation.

After a failed run (not one stopped by a signal or --timeout) with restarts
left, dsmexec says on stderr what failed, which generation the job restarts
from and how many restarts are left, and starts it again: over ssh on the
hosts that still answer (each is asked to run `true`, within
--connect-timeout), the ranks of those that do not going to a spare host
(``host spare`` in the machine file, ``-H ...,host:spare``), all of a
host's ranks to one, or
without one to the others in turn (a machine file of its own, one line a
rank); under Slurm, in the same allocation without the node where the
failed rank ran (services/slurm.py); local ranks restart where they were.
The exit status is the last run's.  At the end dsmexec removes the buddy
memory it can see on this machine (the ranks remove theirs at finalize).
This module only reads file names
(stdlib, no libdsm): the ranks check the checksums and may fall back to an
older generation, which they then say.
"""
import glob
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time

from libdsm_services import machinefile, spawn
from libdsm_services.start import EXIT_TIMEOUT

DIR_VAR, JOB_VAR, RESTART_VAR = "DSM_CHECKPOINT_DIR", "DSM_CHECKPOINT_JOB", "DSM_CHECKPOINT_RESTART"
SHM = "/dev/shm"
_MANIFEST = re.compile(r"gen-(\d{6})\.json$")


def add_options(parser):
    parser.add_argument("--restarts", type=int, default=0, metavar="K",
                        help="after a failure, run the job again up to K times, from its "
                        "newest complete checkpoint (dsm.checkpoint) (default 0)")
    parser.add_argument("--checkpoint-dir", metavar="DIR",
                        help="keep checkpoints in DIR (a path every rank reaches; sets "
                        "DSM_CHECKPOINT_DIR) instead of in buddy memory (/dev/shm)")


def newest_generation(root):
    """The newest generation with a manifest under root, or None."""
    try:
        names = os.listdir(root)
    except OSError:
        return None
    return max((int(m.group(1)) for m in map(_MANIFEST.match, names) if m), default=None)


def answering(hosts, opts):
    """The targets of hosts (machinefile.Hosts) that run `true` over ssh
    within opts.connect_timeout (and a second)."""
    procs = {h.target: subprocess.Popen(
        spawn.ssh_argv(h, ["true"], opts.ssh_options, opts.identity, opts.connect_timeout),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for h in hosts}
    deadline = time.monotonic() + opts.connect_timeout + 1
    ok = set()
    for target, p in procs.items():
        try:
            if p.wait(timeout=max(0.0, deadline - time.monotonic())) == 0:
                ok.add(target)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return ok


class Policy:
    """What dsmexec does about checkpoints and restarts for one command line."""

    def __init__(self, restarts=0, directory=None, job=None, spares=()):
        """spares: the spare hosts -H named (machinefile.spares_of); a
        machine file's are read from it."""
        if restarts < 0:
            raise ValueError("--restarts must be 0 or more, got %d" % restarts)
        self.restarts = restarts
        self.directory = os.path.abspath(directory) if directory else None
        self.job = job or secrets.token_hex(8)
        self._tmpdir = None             # where _rehost writes its machine files
        self.excluded = set()           # Slurm nodes the restarts leave out (services/slurm.py)
        self.spares = list(spares)

    def environ(self, environ):
        """environ with what the ranks need to checkpoint and restore."""
        env = dict(environ)
        env[JOB_VAR] = self.job
        if self.directory:
            env[DIR_VAR] = self.directory
        return env

    def _where(self):
        """Where this machine keeps the generations: the directory, or its
        hosts' memory (one /dev/shm/dsm-ckpt-JOB-HOST per host name)."""
        if self.directory:
            return [self.directory]
        return glob.glob(os.path.join(SHM, "dsm-ckpt-%s-*" % self.job))

    def _rehost(self, opts, job):
        """Point opts at the job's hosts that still answer (a machine file of
        dsmexec's), when some of its ssh hosts do not; nothing otherwise.  The
        ranks of each silent host go to a spare host of the machine file that
        answers, all of them to one; without one left, to the others in turn."""
        hosts = [r.host for r in job.ranks]
        remote = {r.host.target: r.host for r in job.ranks if not r.local}
        spares = machinefile.spares(opts.machine_file) if opts.machine_file else self.spares
        if not remote:
            return
        answer = answering(list(remote.values()) + [h for h in spares if not
                                                     machinefile.is_local(h.host)], opts)
        lost = [t for t in remote if t not in answer]
        ready = [h.target for h in spares if h.target in answer or machinefile.is_local(h.host)]
        to = dict(zip(lost, ready))             # a spare for each of the first lost hosts
        targets = list(dict.fromkeys(h.target for h in hosts if h.target not in lost))
        if not lost or not targets and len(to) < len(lost):
            return                              # nothing lost, or nowhere to go
        rest = itertools.cycle(targets)
        lines = [h.target if h.target not in lost else to.get(h.target) or next(rest)
                 for h in hosts]
        left = [h.target for h in spares if h.target not in to.values()]
        self._write_machines(opts, lines + ["%s %s" % (t, machinefile.SPARE) for t in left])
        job.log("host%s %s do%s not answer: %s" % (
            "s" if len(lost) > 1 else "", ", ".join(lost), "" if len(lost) > 1 else "es",
            "; ".join("rank %d goes to %s%s" % (i, line, " (a spare)" if line in
                                                 to.values() else "")
                      for i, (h, line) in enumerate(zip(hosts, lines)) if h.target in lost)))

    def _write_machines(self, opts, lines):
        """Point opts at a machine file of dsmexec's with these lines."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="dsm-restart-")
        opts.machine_file = os.path.join(self._tmpdir, "machines-%d" % len(os.listdir(
            self._tmpdir)))
        with open(opts.machine_file, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        opts.hosts = None                   # the job reads the new machine file

    def _exclude(self, job):
        """Under Slurm: leave out of the restart the node where the failed
        rank ran (dsmexec's failure message names the rank first), unless
        it is the last one left."""
        m = re.match(r"rank (\d+) ", job.failure or "")
        if not m or int(m[1]) >= len(job.ranks):
            return
        node = job.ranks[int(m[1])].host.host
        others = {r.host.host for r in job.ranks} - {node}
        if not others:
            job.log("node %s, where rank %s failed, is the job's only node: the restart "
                    "runs there again" % (node, m[1]))
            return
        self.excluded.add(node)
        job.log("leaving node %s out of the restart (rank %s failed there): its ranks go "
                "to %s" % (node, m[1], ", ".join(sorted(others))))

    def run(self, opts, job, make_job):
        """Run job, then again (make_job() each time) after a failure while
        restarts are left; the last run's exit status.  A job run under a new
        salloc (slurm.InNewAllocation) restarts inside, in the dsmexec there."""
        left = self.restarts if hasattr(job, "ranks") else 0    # salloc: the inner dsmexec
        while True:
            status = job.run()
            if status == 0 or left == 0 or job.signalled or status == EXIT_TIMEOUT:
                break
            left -= 1
            gen, where = max(((newest_generation(d) or 0, d) for d in self._where()),
                             default=(0, None))
            job.log("the job failed (%s); restarting it %s; %d restart%s left"
                % (job.failure or "exit status %d" % status,
                   "from checkpoint generation %d in %s" % (gen, where) if gen
                   else "from the start (no complete checkpoint here)",
                   left, "" if left == 1 else "s"))
            opts.environ[RESTART_VAR] = str(self.restarts - left)
            if opts.launcher == "slurm":
                self._exclude(job)
            else:
                self._rehost(opts, job)
            job = make_job(opts)
        self.finish()
        return status

    def finish(self):
        """Remove this host's buddy memory of the job (a directory stays) and
        the machine files of the restarts."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        if not self.directory:
            for where in self._where():
                shutil.rmtree(where, ignore_errors=True)
