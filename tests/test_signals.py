"""Exit statuses and signals (issue 11): a rank's real status over ssh, SIGHUP, a
killed dsmexec, and Ctrl-C while another failure is being handled."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import (DSMEXEC, HELPER, REPO, machine_file, run_dsmexec, wait_for_lines,
                      wait_gone)

pytestmark = pytest.mark.timeout(60)


def start_job(tmp_path, tag, lines, opts=(), *args):
    """dsmexec (TMPDIR=tmp_path) with ranks that each start a tagged child and sleep;
    returns the Popen once every rank sleeps."""
    proc = subprocess.Popen([sys.executable, DSMEXEC, *opts, machine_file(tmp_path, *lines),
                             HELPER, "--orphan", "--sleep", "60", "--tag", tag, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    wait_for_lines(proc, len(lines), "sleeping")
    return proc


def stop(proc, sig, timeout=15):
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, err.decode()


def gone_within(tmp_path, tag, timeout=10.0):
    """True once no process carries tag and no dsm-ssh-* directory is left in tmp_path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(tmp_path.glob("dsm-ssh-*")) and not wait_gone(tag, 0):
            return True
        time.sleep(0.05)
    return False


def test_sighup_is_handled_like_sigterm(tmp_path, tag):
    proc = start_job(tmp_path, tag, ["localhost"] * 2)
    status, err = stop(proc, signal.SIGHUP)
    assert status == 129, err
    assert "dsmexec: got SIGHUP, stopping the job" in err
    assert gone_within(tmp_path, tag)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_launcher_leaves_no_local_process(tmp_path, tag, sig):
    proc = start_job(tmp_path, tag, ["localhost"] * 2)
    stop(proc, sig)
    assert gone_within(tmp_path, tag), "left: %s" % wait_gone(tag, 0)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_launcher_leaves_nothing_over_ssh(tmp_path, sshd, tag, sig):
    # two ranks on one host share a connection: a control directory in $TMPDIR
    proc = start_job(tmp_path, tag, ["localhost"] * 2, sshd.options())
    assert list(tmp_path.glob("dsm-ssh-*"))
    stop(proc, sig)
    assert gone_within(tmp_path, tag), "left: %s %s" % (wait_gone(tag, 0),
                                                        list(tmp_path.glob("dsm-ssh-*")))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_an_ssh_rank_killed_by_a_signal_gives_128_plus_n_and_is_named(tmp_path, sshd, tag, sig):
    hosts = machine_file(tmp_path, "localhost", "127.0.0.1")
    r = run_dsmexec(*sshd.options(), hosts, HELPER, "--kill", "1:%d" % sig, "--sleep", "30",
                    "--tag", tag)
    assert r.returncode == 128 + sig, r.stderr
    assert "dsmexec: rank 1 (host 127.0.0.1, line 2) was killed by signal %d (%s)" % (
        sig, signal.Signals(sig).name) in r.stderr


def test_a_stuck_ssh_rank_is_stopped_by_its_supervisor(tmp_path, sshd, tag):
    """A rank whose watch thread cannot run (the GIL held in C) and that ignores SIGTERM
    is stopped all the same: its supervisor kills its group."""
    start = time.monotonic()
    r = run_dsmexec(*sshd.options(), machine_file(tmp_path, "localhost", "127.0.0.1"), HELPER,
                    "--stuck", "0", "--sleep", "1", "--fail", "1:3", "--tag", tag)
    assert r.returncode == 3, r.stderr
    assert "dsmexec: rank 1 (host 127.0.0.1, line 2) exited with status 3" in r.stderr
    assert wait_gone(tag, 10) == []
    assert time.monotonic() - start < 30


def test_an_ssh_rank_that_exits_137_is_not_called_killed(tmp_path, sshd, tag):
    r = run_dsmexec(*sshd.options(), machine_file(tmp_path, "localhost"), HELPER,
                    "--fail", "0:137", "--tag", tag)
    assert r.returncode == 137
    assert "dsmexec: rank 0 (host localhost, line 1) exited with status 137" in r.stderr


def test_ctrl_c_while_another_failure_is_being_handled_gives_130(tmp_path, tag):
    # A rank that never registers and ignores SIGTERM: the registration failure
    # (status 1) starts a teardown that takes seconds; Ctrl-C comes during it.
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\ntrap '' TERM\nexec %s -c 'import time; time.sleep(30)' %s\n"
                    % (sys.executable, tag))
    fake.chmod(0o755)
    proc = subprocess.Popen([sys.executable, DSMEXEC, "--python", str(fake), "--connect-timeout",
                             "0.5", machine_file(tmp_path, "localhost"), HELPER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    err, deadline = b"", time.monotonic() + 20
    while b"did not register" not in err and time.monotonic() < deadline:
        err += os.read(proc.stderr.fileno(), 4096)
    status, rest = stop(proc, signal.SIGINT)
    err = err.decode() + rest
    assert status == 130, err
    assert "dsmexec: got SIGINT, killing the job now" in err
    assert wait_gone(tag, 5) == []
