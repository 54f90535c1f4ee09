"""Several hosts on one machine, for the multi-host tests (conftest's `hosts` fixture).

Each host is a network namespace with a veth into a bridge in this
(the root) namespace, an address 10.200.N.i/24 and a private sshd on
port 22 that lets root in with one generated key.  The bridge itself
has 10.200.N.254: dsmexec, running here, is reached there, and the
ranks learn it from $SSH_CLIENT as with any ssh host.  The filesystem
is shared, so the same interpreter and paths work on every "host".

    with virtual_hosts(3, directory) as c:
        run dsmexec with c.options() and a machine file of c.addresses
        c.leftovers()       # what still runs in the namespaces, sshd aside

Every name made here carries this process's pid and a letter per cluster
(``dsmt<pid>a...``), so a later run can remove what a killed run left; teardown stops each sshd by
its pid, kills what is left in each namespace by pid, deletes the veths
and the bridge, then the namespaces.
"""
import contextlib
import fcntl
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

import sshd as private      # tests/sshd.py: keys, config and start of one sshd

PREFIX = "dsmt"
_NAME_RE = re.compile(r"%s(\d+)[a-z](?:h|v|br)\d*\Z" % PREFIX)
_instances = iter("abcdefghijklmnopqrstuvwxyz")    # several clusters in one process


class NetnsError(RuntimeError):
    """The hosts could not be made (not root, no iproute2, namespaces refused)."""


def missing():
    """Why no namespaces can be made here (a message), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "ip is missing: install iproute2"
    return private.missing()


def ip(*args, check=True):
    """Run `ip ARGS`; raise NetnsError with its stderr if it fails and check is set."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise NetnsError("ip %s: %s" % (" ".join(args), p.stderr.strip()))
    return p.stdout


def namespace_pids(name):
    """The pids of the processes in namespace `name`."""
    return [int(p) for p in ip("netns", "pids", name, check=False).split()]


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _kill(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale():
    """Remove the namespaces and links of earlier runs whose process is gone."""
    links = [l.split(":")[1].strip().split("@")[0]
             for l in ip("-o", "link", "show", check=False).splitlines() if ":" in l]
    spaces = [l.split()[0] for l in ip("netns", "list", check=False).splitlines() if l.strip()]
    stale = lambda name: (_NAME_RE.match(name) and not _alive(int(_NAME_RE.match(name)[1])))
    for name in (n for n in links if stale(n)):
        ip("link", "del", name, check=False)
    for name in (n for n in spaces if stale(n)):
        _kill(namespace_pids(name))
        ip("netns", "del", name, check=False)


SUBNET_LOCK = "/run/lock/dsm-netns-subnet"
"""Held while a cluster picks its subnet and puts it on its bridge, so that
two test suites side by side never pick the same one."""


@contextlib.contextmanager
def subnet_lock():
    os.makedirs(os.path.dirname(SUBNET_LOCK), exist_ok=True)
    with open(SUBNET_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)       # the other suite's pick takes a moment
        yield


def free_subnet():
    """The first 10.200.N (N from 0) that no interface here uses."""
    used = ip("-o", "-4", "addr", "show", check=False)
    for n in range(256):
        if " 10.200.%d." % n not in used:
            return "10.200.%d" % n
    raise NetnsError("every 10.200.N.0/24 is in use")


@dataclass
class Host:
    """One namespace: its name, address, sshd process and that sshd's log."""
    name: str
    address: str
    veth: str
    log: str
    sshd: subprocess.Popen = None


@dataclass
class Cluster:
    """The running hosts and what it takes to ssh into them."""
    hosts: list
    gateway: str            # this machine's address on the bridge
    key: str
    known_hosts: str
    stem: str               # what every name made for it starts with
    made: list = field(default_factory=list)   # namespaces created so far

    @property
    def bridge(self):
        return self.stem + "br"

    @property
    def addresses(self):
        return [h.address for h in self.hosts]

    def ssh_options(self):
        """-i/-o arguments for ssh (and dsmexec) that reach every host, host keys checked."""
        args = ["-i", self.key]
        for o in ("UserKnownHostsFile=" + self.known_hosts, "StrictHostKeyChecking=yes",
                  "IdentitiesOnly=yes", "LogLevel=ERROR"):
            args += ["-o", o]
        return args

    def logins(self):
        """{address: accepted logins so far} from each sshd's log."""
        return {h.address: pathlib.Path(h.log).read_text().count("Accepted publickey")
                for h in self.hosts}

    def leftovers(self):
        """{address: ["pid cmdline", ...]} of every process in a namespace but its sshd."""
        found = {}
        for h in self.hosts:
            rest = [p for p in namespace_pids(h.name) if h.sshd is None or p != h.sshd.pid]
            if rest:
                found[h.address] = ["%d %s" % (p, cmdline(p)) for p in rest]
        return found

    def wait_clean(self):
        """Wait until only the sshds run in the namespaces (the test's timeout bounds it)."""
        while self.leftovers():
            time.sleep(0.05)

    def kill_leftovers(self):
        for h in self.hosts:
            _kill([p for p in namespace_pids(h.name) if h.sshd is None or p != h.sshd.pid])


def _make_host(cluster, index, subnet, d):
    """Namespace, veth into the bridge, address, loopback; no sshd yet."""
    h = Host("%sh%d" % (cluster.stem, index), "%s.%d" % (subnet, index),
             "%sv%d" % (cluster.stem, index), str(d / ("sshd-h%d.log" % index)))
    ip("netns", "add", h.name)
    cluster.made.append(h)
    ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.name)
    ip("link", "set", h.veth, "master", cluster.bridge, "up")
    ip("-n", h.name, "addr", "add", h.address + "/24", "dev", "eth0")
    ip("-n", h.name, "link", "set", "eth0", "up")
    ip("-n", h.name, "link", "set", "lo", "up")
    return h


def _start_sshd(h, d, authorized_keys):
    """This host's sshd on its address, port 22; its host key goes in known_hosts."""
    hd = d / h.name
    hd.mkdir()
    private._keygen(hd / "host_key")
    config = private._sshd_config(hd, 22, h.address, authorized_keys)
    with open(h.log, "w") as log:
        h.sshd = subprocess.Popen(["ip", "netns", "exec", h.name, private.SSHD, "-D", "-e",
                                   "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    if not private._wait_port(22, h.sshd, address=h.address):
        raise NetnsError("the sshd of %s did not start: %s" % (h.address,
                                                               pathlib.Path(h.log).read_text()))
    kind, key = (hd / "host_key.pub").read_text().split()[:2]
    return "%s %s %s\n" % (h.address, kind, key)


def _teardown(cluster):
    """Stop each sshd and whatever is left by pid, then the links, then the namespaces."""
    for h in cluster.made:
        if h.sshd is not None:
            private._stop(h.sshd)
        _kill(namespace_pids(h.name))
    for h in cluster.made:
        ip("link", "del", h.veth, check=False)
    ip("link", "del", cluster.bridge, check=False)
    for h in cluster.made:
        ip("netns", "del", h.name, check=False)


@contextlib.contextmanager
def virtual_hosts(count, directory):
    """Make `count` hosts (see the module doc) for the block; yield the Cluster.

    Raises NetnsError if they cannot be made; everything made is removed on the way out.
    """
    why = missing()
    if why:
        raise NetnsError(why)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    remove_stale()
    d = pathlib.Path(directory)
    private._keygen(d / "client_key")
    authorized = d / "authorized_keys"
    authorized.write_text((d / "client_key.pub").read_text())
    with subnet_lock():
        subnet = free_subnet()
        cluster = Cluster([], subnet + ".254", str(d / "client_key"), str(d / "known_hosts"),
                          "%s%d%s" % (PREFIX, os.getpid(), next(_instances)))
        ip("link", "add", cluster.bridge, "type", "bridge")
        try:
            ip("addr", "add", cluster.gateway + "/24", "dev", cluster.bridge)
        except NetnsError:
            ip("link", "del", cluster.bridge, check=False)
            raise
    try:
        ip("link", "set", cluster.bridge, "up")
        cluster.hosts = [_make_host(cluster, i, subnet, d) for i in range(1, count + 1)]
        known = "".join(_start_sshd(h, d, authorized) for h in cluster.hosts)
        pathlib.Path(cluster.known_hosts).write_text(known)
        yield cluster
    finally:
        _teardown(cluster)
