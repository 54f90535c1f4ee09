"""Shared fixtures for the launcher tests: a private sshd, dsmexec runs, leftover checks."""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSMEXEC = os.path.join(REPO, "dsmexec.py")
HELPER = os.path.join(REPO, "tests", "helper_prog.py")
SSHD = "/usr/sbin/sshd"          # sshd refuses to start without its absolute path
RUN_TIMEOUT = 60


# ---------------------------------------------------------------- dsmexec runs

def run_dsmexec(*argv, timeout=RUN_TIMEOUT, **kwargs):
    """Run dsmexec.py with argv; return the CompletedProcess (text, both streams captured)."""
    return subprocess.run([sys.executable, DSMEXEC, *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=kwargs.pop("cwd", REPO), **kwargs)


def machine_file(tmp_path, *lines, name="machines"):
    """Write a machine file with these lines; return its path as a str."""
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def pids_with(marker):
    """Pids of the processes (not this one) whose command line contains marker."""
    found, me = [], os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass                # it ended while we looked
    return found


def wait_gone(marker, timeout=10.0):
    """Wait until no process carries marker; return the pids still there at the deadline."""
    deadline = time.monotonic() + timeout
    while pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids_with(marker)


def wait_for_lines(proc, count, word, timeout=20.0):
    """Read proc's stdout until count lines contain word; return what was read."""
    seen, deadline = b"", time.monotonic() + timeout
    while seen.count(word.encode()) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            proc.kill()
            pytest.fail("the ranks did not start in %g s: %r" % (timeout, seen))
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            pytest.fail("dsmexec ended early: %r %r" % (seen, proc.stderr.read()))
        seen += chunk
    return seen


@pytest.fixture
def tag():
    """A unique marker for helper_prog's --tag; afterwards no process may still carry it."""
    marker = "dsmtest-" + uuid.uuid4().hex
    yield marker
    left = wait_gone(marker)
    for pid in left:                # do not let one failure leak into the next tests
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "processes outlived the job: %s" % left


# ---------------------------------------------------------------- a private sshd

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)


def _wait_port(port, proc, timeout=10.0):
    """True once 127.0.0.1:port accepts; False if proc died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Sshd:
    """A running private sshd and the keys to use it."""
    port: int
    key: str            # in authorized_keys
    refused_key: str    # a valid key the server does not know
    log: str

    def options(self, key=None, ssh_all=True):
        """dsmexec options that reach this sshd with key (default: the accepted key)."""
        opts = ["--ssh-all"] if ssh_all else []
        opts += ["-i", key or self.key]
        for o in ("Port=%d" % self.port, "StrictHostKeyChecking=no",
                  "UserKnownHostsFile=/dev/null", "LogLevel=ERROR", "IdentitiesOnly=yes"):
            opts += ["-o", o]
        return opts


def _sshd_config(d, port):
    path = d / "sshd_config"
    path.write_text("\n".join([
        "Port %d" % port, "ListenAddress 127.0.0.1", "HostKey %s" % (d / "host_key"),
        "PidFile %s" % (d / "sshd.pid"), "AuthorizedKeysFile %s" % (d / "authorized_keys"),
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", ""]))
    return path


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1; skipped without /usr/sbin/sshd, except under CI=true."""
    if not os.path.exists(SSHD) or not shutil.which("ssh"):
        if os.environ.get("CI") == "true":
            pytest.fail("%s or ssh is missing: install openssh-server and openssh-client" % SSHD)
        pytest.skip("%s is not installed" % SSHD)
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "refused_key"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    for _attempt in range(3):           # the free port may be taken before sshd binds it
        port = _free_port()
        log = open(d / "sshd.log", "w")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(_sshd_config(d, port))],
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if _wait_port(port, proc):
            break
        _stop(proc)
    else:
        pytest.fail("the private sshd did not start: %s" % (d / "sshd.log").read_text())
    try:
        yield Sshd(port, str(d / "client_key"), str(d / "refused_key"), str(d / "sshd.log"))
    finally:
        _stop(proc)
