"""A private single-node Slurm for the Slurm tests (conftest's `slurm` fixture).

munged, slurmctld and slurmd run in the foreground, as children of the
test process, on a private configuration in a temporary directory: their
own munge key and socket, private ports, state, spool and logs.  Slurm's
clients reach this cluster, and only it, through ``SLURM_CONF``::

    with private_slurm() as s:
        subprocess.run(["srun", "-n", "4", "hostname"], env=s.environ())

This machine becomes one node with 8 CPUs (8 task slots, whatever the real
core count) in one partition; or, given tests/netns.py hosts, each of them
becomes a node.  Every daemon is stopped by its pid at the end.
"""
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from sshd import _free_port, _stop

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld",
           "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("srun", "salloc", "sbatch", "scontrol", "sinfo", "squeue", "scancel")
START_TIMEOUT = 30.0


class SlurmError(RuntimeError):
    """The private Slurm could not be started."""


def missing():
    """Why no private Slurm can run here (a message), or None if it can."""
    if os.geteuid() != 0:
        return "the private Slurm needs root"
    absent = [p for p in DAEMONS.values() if not os.path.exists(p)]
    absent += [c for c in CLIENTS if not shutil.which(c)]
    if absent:
        return "%s missing: install slurm-wlm and munge" % ", ".join(absent)
    return None


@dataclass
class Slurm:
    """A running private Slurm: its configuration file and (first) node name."""
    conf: str
    node: str
    directory: str

    def environ(self, base=None):
        """base (default os.environ) without any SLURM_* of an outer job, with SLURM_CONF."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = self.conf
        return env

    def log(self, daemon):
        with open(os.path.join(self.directory, daemon + ".log"), errors="replace") as f:
            return f.read()


def _config(d, controller, nodes, cpus, settings=()):
    """slurm.conf: `controller` (a name, or ``name(address)``), nodes [(name, address or None)],
    and settings, lines of its own (``SlurmdTimeout=6``)."""
    names = ",".join(n for n, _ in nodes)
    return "\n".join([
        "ClusterName=dsmtest", "SlurmctldHost=%s" % controller, "SlurmUser=root",
        "SlurmctldPort=%d" % _free_port(), "SlurmdPort=%d" % _free_port(),
        "AuthType=auth/munge", "CredType=cred/munge", "AuthInfo=socket=%s/munge.sock" % d,
        "StateSaveLocation=%s/state" % d, "SlurmdSpoolDir=%s/spool-%%n" % d,
        "SlurmctldPidFile=%s/slurmctld.pid" % d, "SlurmdPidFile=%s/slurmd-%%n.pid" % d,
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SlurmdParameters=config_overrides", "ReturnToService=2", "MailProg=/bin/true",
        "KillWait=2", *settings,
        *["NodeName=%s CPUs=%d State=UNKNOWN" % (n, cpus) + (
            " NodeAddr=%s NodeHostname=%s" % (a, n) if a else "") for n, a in nodes],
        "PartitionName=dsm Nodes=%s Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
        % names, ""])


def _start(name, argv, d, procs):
    """Start one daemon in the foreground, its output to NAME.log; keep it in procs."""
    with open(os.path.join(d, name + ".log"), "w") as log:
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))


def _wait(what, ready, procs, slurm):
    """Poll ready() until true; SlurmError with the logs if a daemon died or time ran out."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            logs = "".join("--- %s\n%s" % (n[:-4], slurm.log(n[:-4])[-2000:])
                           for n in sorted(os.listdir(slurm.directory)) if n.endswith(".log"))
            raise SlurmError("%s did not happen within %g s:\n%s" % (what, START_TIMEOUT, logs))
        time.sleep(0.1)


def _controller_up(slurm):
    p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                       env=slurm.environ(), timeout=30)
    return "is UP" in p.stdout


def _node_idle(slurm):
    p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                       env=slurm.environ(), timeout=30)
    return p.stdout.strip() == "idle"


def queue_drains(slurm, timeout=None):
    """Wait until this cluster has no job, not even one completing; False if `timeout`
    (seconds) ran out first.  Without one the test's timeout bounds the wait."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        p = subprocess.run(["squeue", "-h"], capture_output=True, text=True,
                           env=slurm.environ(), timeout=30)
        if p.returncode != 0 or not p.stdout.strip():
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _cancel_all(slurm):
    """Cancel this cluster's jobs and wait (bounded) until none is left."""
    subprocess.run(["scancel", "--full", "--user", "root"], env=slurm.environ(), timeout=30,
                   capture_output=True)
    queue_drains(slurm, timeout=10.0)


@contextlib.contextmanager
def private_slurm(cpus=8, hosts=None, settings=()):
    """Run munged, slurmctld and slurmd for the block; yield the Slurm.

    Without `hosts` this machine is the one node.  With `hosts` (a
    netns.Cluster) each of them is a node, h1, h2, ..., with its slurmd in
    its namespace (entered with nsenter, which keeps the cgroup mounts
    slurmd needs), and the controller is reached at the bridge's address.
    settings: more slurm.conf lines (a test of a node that dies shortens
    SlurmdTimeout).
    Raises SlurmError if a daemon does not start.  Every daemon is stopped
    by its pid on the way out, after this cluster's jobs were cancelled.
    """
    why = missing() or (hosts and not shutil.which("nsenter") and "nsenter is missing")
    if why:
        raise SlurmError(why)
    d = tempfile.mkdtemp(prefix="dsm-slurm-")
    procs = []
    try:
        os.chmod(d, 0o755)          # munged wants every directory above its socket searchable
        here = socket.gethostname().split(".")[0]
        if hosts:
            nodes = [("h%d" % i, h.address) for i, h in enumerate(hosts.hosts, 1)]
            controller = "%s(%s)" % (here, hosts.gateway)
        else:
            nodes, controller = [(here, None)], here
        for sub in ["state"] + ["spool-" + n for n, _ in nodes]:
            os.mkdir(os.path.join(d, sub))
        key = os.path.join(d, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        conf = os.path.join(d, "slurm.conf")
        with open(conf, "w") as f:
            f.write(_config(d, controller, nodes, cpus, settings))
        slurm = Slurm(conf, nodes[0][0], d)
        _start("munged", [DAEMONS["munged"], "-F", "--key-file=" + key,
                          "--socket=%s/munge.sock" % d, "--pid-file=%s/munged.pid" % d,
                          "--seed-file=%s/munged.seed" % d, "--log-file=%s/munged.file" % d],
               d, procs)
        _wait("munged listening", lambda: os.path.exists(os.path.join(d, "munge.sock")),
              procs, slurm)
        _start("slurmctld", [DAEMONS["slurmctld"], "-D", "-f", conf], d, procs)
        # a slurmd that finds no controller registers again only at the
        # controller's next ping, minutes away: start them once it answers
        _wait("slurmctld answering", lambda: _controller_up(slurm), procs, slurm)
        for i, (name, _) in enumerate(nodes):
            enter = ["nsenter", "--net=/run/netns/" + hosts.hosts[i].name] if hosts else []
            _start("slurmd-" + name, [*enter, DAEMONS["slurmd"], "-D", "-N", name, "-f", conf],
                   d, procs)
        _wait("the nodes going idle", lambda: _node_idle(slurm), procs, slurm)
        try:
            yield slurm
        finally:
            _cancel_all(slurm)
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(d, ignore_errors=True)
