"""The ssh dialogue table (services/ssh.py), driven by fake "ssh" scripts: no network."""
import os

import pytest

from libdsm_services import iomux, ssh, wire
from libdsm_services.machinefile import Host

pytestmark = pytest.mark.timeout(60)
HOST = Host(None, "h7", 3, "h7")
PATIENT = 3600.0
"""A dialogue timeout past the test's own: a row must be told by what the script says."""


def launch(script, rank=0):
    """A Launch whose 'ssh' is `sh -c script`."""
    return ssh.Launch(rank, HOST, ["sh", "-c", script])


def reason_of(script, timeout=PATIENT):
    l = launch(script)
    with pytest.raises(ssh.SpawnError) as e:
        ssh.converse(l, wire.new_secret(), timeout)
    os.close(l.stderr_fd)
    assert (e.value.rank, e.value.host, e.value.lineno) == (0, HOST, 3)
    return e.value.reason


@pytest.mark.parametrize("script, reason", [
    ("printf 'Are you sure you want to continue connecting (yes/no/[fingerprint])? '; sleep 10",
     ssh.HOST_KEY_UNKNOWN.format(host="h7", line=3)),
    ("printf 'root@h7 password: '; sleep 10",
     "h7 asks for a password (line 3); set up key authentication"),
    ("echo 'root@h7: Permission denied (publickey).' >&2; exit 255",
     "permission denied by h7 (line 3): the key was refused"),
    ("echo 'ssh: Could not resolve hostname h7: Name or service not known' >&2; exit 255",
     "cannot resolve host h7 (line 3)"),
    ("echo 'Host key verification failed.' >&2; exit 255",
     "host key of h7 is not known (line 3): add it to ~/.ssh/known_hosts (ssh h7 once, or "
     "ssh-keyscan h7 >> ~/.ssh/known_hosts), or give dsmexec -o "
     "StrictHostKeyChecking=accept-new to trust it on first use (a key that changed: "
     "ssh-keygen -R h7 first)"),
    ("echo 'ssh: connect to host h7 port 22: Connection refused' >&2; exit 255",
     "h7 refused the connection (line 3)"),
    ("echo 'ssh: connect to host h7 port 22: Connection timed out' >&2; exit 255",
     "the connection to h7 timed out (line 3)"),
    ("echo 'env: python9: No such file or directory' >&2; exit 127",
     "ssh to h7 (line 3) ended with status 127 before the rank started: "
     "env: python9: No such file or directory"),
])
def test_each_row_of_the_table(script, reason):
    assert reason_of(script) == reason


def test_silence_is_a_timeout():
    # The script would be silent for an hour: only the dialogue's own clock ends it.
    assert reason_of("sleep 3600", timeout=0.3) == "h7 did not answer within 0.3 s (line 3)"


def test_the_child_is_closed_before_the_error_is_raised():
    l = launch("printf 'Password: '; sleep 10")
    with pytest.raises(ssh.SpawnError):
        ssh.converse(l, wire.new_secret(), 5)
    assert not l.child.isalive()
    os.close(l.stderr_fd)


def test_ready_gets_the_secret_and_keeps_stdout_and_stderr_apart():
    secret = wire.new_secret()
    l = launch("echo motd; echo DSMEXEC-READY 4; read s; echo got $s; echo oops >&2; echo more",
               rank=4)
    ssh.converse(l, secret, PATIENT)
    out = l.output
    while True:
        chunk = iomux.read_chunk(l.child.child_fd)
        if not chunk:
            break
        out += chunk
    err = l.stderr_text()
    l.close(wait=2)
    os.close(l.stderr_fd)
    assert out == b"motd\ngot %s\nmore\n" % secret.hex().encode()
    assert err == "oops"


def test_the_marker_of_another_rank_does_not_count():
    assert reason_of("echo DSMEXEC-READY 1; sleep 10", timeout=0.5).startswith(
        "h7 did not answer")
