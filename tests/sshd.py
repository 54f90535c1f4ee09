"""A private sshd on 127.0.0.1 with generated keys, for the ssh tests
(conftest's `sshd` fixture) and the launch benchmark (bench/launch.py).

    with private_sshd() as s:          # or private_sshd(some_dir) to keep the files
        subprocess.run(["ssh", *s.ssh_args(), "127.0.0.1", "true"])
"""
import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

SSHD = "/usr/sbin/sshd"          # sshd refuses to start without its absolute path


class SshdError(RuntimeError):
    """The private sshd could not be started."""


def missing():
    """Why no private sshd can run here (a message), or None if it can."""
    if not os.path.exists(SSHD) or not shutil.which("ssh"):
        return "%s or ssh is missing: install openssh-server and openssh-client" % SSHD
    return None


@dataclass
class Sshd:
    """A running private sshd and the keys to use it."""
    port: int
    key: str            # in authorized_keys
    refused_key: str    # a valid key the server does not know
    log: str

    def ssh_args(self, key=None):
        """ssh's -i/-o arguments that reach this sshd with key (default: the accepted key)."""
        args = ["-i", key or self.key]
        for o in ("Port=%d" % self.port, "StrictHostKeyChecking=no",
                  "UserKnownHostsFile=/dev/null", "LogLevel=ERROR", "IdentitiesOnly=yes"):
            args += ["-o", o]
        return args

    def options(self, key=None, ssh_all=True):
        """dsmexec options that reach this sshd with key (default: the accepted key)."""
        return (["--ssh-all"] if ssh_all else []) + self.ssh_args(key)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)


def _wait_port(port, proc, timeout=10.0, address="127.0.0.1"):
    """True once address:port accepts; False if proc died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
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


def _sshd_config(d, port, address="127.0.0.1", authorized_keys=None):
    path = d / "sshd_config"
    path.write_text("\n".join([
        "Port %d" % port, "ListenAddress %s" % address, "HostKey %s" % (d / "host_key"),
        "PidFile %s" % (d / "sshd.pid"),
        "AuthorizedKeysFile %s" % (authorized_keys or d / "authorized_keys"),
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", ""]))
    return path


@contextlib.contextmanager
def private_sshd(directory=None):
    """Run a private sshd for the duration of the block; yield its Sshd.

    Its keys, config and log go to `directory` (kept), or to a temporary
    directory removed afterwards.  Raises SshdError if sshd is missing or
    does not start; the daemon is stopped by its pid on the way out."""
    why = missing()
    if why:
        raise SshdError(why)
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsm-sshd-"))
        d = pathlib.Path(directory)
        for name in ("host_key", "client_key", "refused_key"):
            _keygen(d / name)
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _attempt in range(3):           # the free port may be taken before sshd binds it
            port = _free_port()
            with open(d / "sshd.log", "w") as log:
                proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(_sshd_config(d, port))],
                                        stdout=log, stderr=subprocess.STDOUT)
            if _wait_port(port, proc):
                break
            _stop(proc)
        else:
            raise SshdError("the private sshd did not start: %s" % (d / "sshd.log").read_text())
        try:
            yield Sshd(port, str(d / "client_key"), str(d / "refused_key"), str(d / "sshd.log"))
        finally:
            _stop(proc)
