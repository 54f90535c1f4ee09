"""dsmexec through a real (private) sshd on 127.0.0.1: the ssh path end to end."""
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import (DSMEXEC, HELPER, REPO, machine_file, pids_with, run_dsmexec,
                      wait_for_lines, wait_gone)
from libdsm_services import iomux, procs, spawn, ssh, wire
from libdsm_services.machinefile import Host

pytestmark = pytest.mark.timeout(90)
PATIENT = 3600.0
"""A dialogue timeout past the test's own: the tests wait for what the ranks say."""

# A label over 63 characters: the resolver refuses the name by itself, with no
# DNS query leaving the machine (a plain *.invalid name would ask the DNS server).
UNRESOLVABLE = "no-such-host-" + "x" * 60 + ".invalid"


def test_two_ssh_ranks_print_with_prefixes_and_separate_streams(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", "# a comment", "127.0.0.1")
    r = run_dsmexec(*sshd.options(), hosts, HELPER, "--rank-print", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[rank 0] hello from rank 0 of 2",
                                             "[rank 1] hello from rank 1 of 2"]
    assert sorted(r.stderr.splitlines()) == ["[rank 0] stderr of rank 0",
                                             "[rank 1] stderr of rank 1"]
    assert "\r" not in r.stdout


def test_ssh_and_local_ranks_in_one_job(tmp_path, sshd, tag):
    # root@localhost goes through ssh (a user is named), localhost starts here.
    hosts = machine_file(tmp_path, "localhost", "root@localhost")
    r = run_dsmexec(*sshd.options(ssh_all=False), hosts, HELPER, "--rank-print", "--lines", "50",
                    "--tag", tag)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "[rank 0] hello from rank 0 of 2" in out and "[rank 1] hello from rank 1 of 2" in out
    assert len([line for line in out if line.endswith("|end")]) == 100
    assert "\r" not in r.stdout


def test_exit_status_comes_back_over_ssh(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", "localhost")
    r = run_dsmexec(*sshd.options(), hosts, HELPER, "--fail", "1:5", "--tag", tag)
    assert r.returncode == 5
    assert "dsmexec: rank 1 (host localhost, line 2) exited with status 5" in r.stderr


def test_refused_key_is_a_clear_error(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "# first", "localhost")
    r = run_dsmexec(*sshd.options(key=sshd.refused_key), hosts, HELPER, "--tag", tag)
    assert r.returncode != 0
    assert "dsmexec: rank 0: permission denied by localhost (line 2): the key was refused" \
        in r.stderr


def test_unresolvable_host_is_a_clear_error(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", UNRESOLVABLE)
    r = run_dsmexec(*sshd.options(), hosts, HELPER, "--sleep", "30", "--tag", tag)
    assert r.returncode != 0
    assert "dsmexec: rank 1: cannot resolve host %s (line 2)" % UNRESOLVABLE in r.stderr


def test_closed_port_is_a_clear_error(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost")
    opts = [o.replace("Port=%d" % sshd.port, "Port=1") for o in sshd.options()]
    r = run_dsmexec(*opts, hosts, HELPER, "--tag", tag)
    assert r.returncode != 0
    assert "localhost refused the connection (line 1)" in r.stderr


@pytest.mark.parametrize("lines", [["localhost", "127.0.0.1"], ["127.0.0.1"] * 3],
                         ids=["two-hosts", "shared-connection"])
def test_sigterm_leaves_no_remote_rank_behind(tmp_path, sshd, tag, lines):
    hosts = machine_file(tmp_path, *lines)
    proc = subprocess.Popen([sys.executable, DSMEXEC, *sshd.options(), hosts, HELPER,
                             "--sleep", "3600", "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        wait_for_lines(proc, len(lines), "sleeping")
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert wait_gone(tag) == []     # the ranks would sleep an hour
    assert wait_gone("ControlPath=" + str(tmp_path)) == []     # the control master too
    assert list(tmp_path.glob("dsm-ssh-*")) == []


def test_ranks_on_one_host_share_a_connection_that_ends_with_the_job(tmp_path, sshd, tag):
    # dsmexec's private directory for the control sockets goes to $TMPDIR = tmp_path.
    hosts = machine_file(tmp_path, *["localhost"] * 4)
    proc = subprocess.Popen([sys.executable, DSMEXEC, *sshd.options(), hosts, HELPER,
                             "--rank-print", "--sleep", "1", "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        seen = wait_for_lines(proc, 4, "sleeping")
        sharing = pids_with("ControlPath=" + str(tmp_path))
        masters = [pid for pid in pids_with("ControlMaster=yes") if pid in sharing]
        assert len(masters) == 1 and len(sharing) == 5      # one master, four ranks
        out, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert sorted(line for line in (seen + out).decode().splitlines() if "hello" in line) == [
        "[rank %d] hello from rank %d of 4" % (r, r) for r in range(4)]
    assert wait_gone("ControlPath=" + str(tmp_path)) == []
    assert list(tmp_path.glob("dsm-ssh-*")) == []


def test_a_refused_shared_connection_is_the_error_of_its_first_rank(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "# first", "localhost", "localhost", "localhost")
    r = run_dsmexec(*sshd.options(key=sshd.refused_key), hosts, HELPER, "--tag", tag,
                    env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode != 0
    assert "dsmexec: rank 0: permission denied by localhost (line 2): the key was refused" \
        in r.stderr
    assert list(tmp_path.glob("dsm-ssh-*")) == []


def test_a_sharing_option_of_the_user_wins(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", "localhost")
    r = run_dsmexec(*sshd.options(), "-o", "ControlMaster=no", hosts, HELPER, "--rank-print",
                    "--tag", tag, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stdout.splitlines() if "hello" in line]) == 2
    assert list(tmp_path.glob("dsm-ssh-*")) == []       # dsmexec made no control directory


def fake_rank_specs(sshd, n, tag):
    """ssh specs for n 'ranks' that print the READY marker, then echo the secret line back."""
    code = ("import sys, time; print('DSMEXEC-READY %d' % int(sys.argv[1])); "
            "print('secret', sys.stdin.readline().strip()); time.sleep(0.5)")
    opts = sshd.options()[4::2]         # the -o values
    return [(r, Host(None, "localhost", r + 1, "localhost"),
             spawn.ssh_argv(Host(None, "localhost", r + 1, "localhost"),
                            [sys.executable, "-u", "-c", code, str(r), tag], opts, sshd.key, 10,
                            {}, REPO)) for r in range(n)]


def read_until_eof(fd):
    """All of fd up to its end (the test's timeout bounds the wait)."""
    data = b""
    while True:
        select.select([fd], [], [])
        chunk = iomux.read_chunk(fd)
        if not chunk:
            return data
        data += chunk


def test_dialogues_run_concurrently_and_the_secret_goes_through_the_pty(sshd, tag, monkeypatch):
    spans = {}
    real = ssh.converse

    def timed(launch, secret, timeout):
        begin = time.monotonic()
        real(launch, secret, timeout)
        spans[launch.rank] = (begin, time.monotonic())
    monkeypatch.setattr(ssh, "converse", timed)
    secret = wire.new_secret()
    started = ssh.start_all(fake_rank_specs(sshd, 4, tag), secret, PATIENT)
    try:
        # Every dialogue began before the first one ended: they overlapped.
        assert max(b for b, _ in spans.values()) < min(e for _, e in spans.values())
        for p in started:
            out = p.early_output + read_until_eof(p.stdout_fd)
            assert out == b"secret %s\n" % secret.hex().encode()     # no \r: OPOST is off
    finally:
        procs.reap(started)
        for p in started:
            p.close()
    assert all(p.status == 0 for p in started)


def test_a_failing_dialogue_closes_every_child(sshd, tag):
    specs = fake_rank_specs(sshd, 3, tag)
    bad = Host(None, UNRESOLVABLE, 2, UNRESOLVABLE)
    specs[1] = (1, bad, spawn.ssh_argv(bad, ["true"], (), sshd.key, 10, {}, REPO))
    with pytest.raises(ssh.SpawnError) as e:
        ssh.start_all(specs, wire.new_secret(), PATIENT)
    assert (e.value.rank, e.value.lineno) == (1, 2)
    assert "cannot resolve host" in e.value.reason
    assert wait_gone(tag) == []
