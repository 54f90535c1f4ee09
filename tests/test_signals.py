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
    """dsmexec (TMPDIR=tmp_path) with ranks that each start a tagged child and sleep an
    hour (past the test's timeout: only the teardown ends them); returns the Popen once
    every rank sleeps."""
    proc = subprocess.Popen([sys.executable, DSMEXEC, *opts, machine_file(tmp_path, *lines),
                             HELPER, "--orphan", "--sleep", "3600", "--tag", tag, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    wait_for_lines(proc, len(lines), "sleeping")
    return proc


def stop(proc, sig):
    proc.send_signal(sig)
    try:
        _, err = proc.communicate()
    finally:
        proc.kill()
    return proc.returncode, err.decode()


def wait_clean(tmp_path, tag):
    """Wait until no process carries tag and no dsm-ssh-* directory is left in tmp_path:
    the ranks sleep an hour, so what is left fails the test by its timeout."""
    while list(tmp_path.glob("dsm-ssh-*")) or wait_gone(tag, 0):
        time.sleep(0.05)


def test_sighup_is_handled_like_sigterm(tmp_path, tag):
    proc = start_job(tmp_path, tag, ["localhost"] * 2)
    status, err = stop(proc, signal.SIGHUP)
    assert status == 129, err
    assert "dsmexec: got SIGHUP, stopping the job" in err
    wait_clean(tmp_path, tag)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_launcher_leaves_no_local_process(tmp_path, tag, sig):
    proc = start_job(tmp_path, tag, ["localhost"] * 2)
    stop(proc, sig)
    wait_clean(tmp_path, tag)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_launcher_leaves_nothing_over_ssh(tmp_path, sshd, tag, sig):
    # two ranks on one host share a connection: a control directory in $TMPDIR
    proc = start_job(tmp_path, tag, ["localhost"] * 2, sshd.options())
    assert list(tmp_path.glob("dsm-ssh-*"))
    stop(proc, sig)
    wait_clean(tmp_path, tag)


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
    r = run_dsmexec(*sshd.options(), machine_file(tmp_path, "localhost", "127.0.0.1"), HELPER,
                    "--stuck", "0", "--sleep", "1", "--fail", "1:3", "--tag", tag)
    assert r.returncode == 3, r.stderr
    assert "dsmexec: rank 1 (host 127.0.0.1, line 2) exited with status 3" in r.stderr
    assert wait_gone(tag) == []


def test_an_ssh_rank_that_exits_137_is_not_called_killed(tmp_path, sshd, tag):
    r = run_dsmexec(*sshd.options(), machine_file(tmp_path, "localhost"), HELPER,
                    "--fail", "0:137", "--tag", tag)
    assert r.returncode == 137
    assert "dsmexec: rank 0 (host localhost, line 1) exited with status 137" in r.stderr


def test_ctrl_c_while_another_failure_is_being_handled_gives_130(tmp_path, tag):
    # A rank that never registers and ignores SIGTERM: the registration failure
    # (status 1) starts a teardown that takes seconds; Ctrl-C comes during it.
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\ntrap '' TERM\nexec %s -c 'import time; time.sleep(3600)' %s\n"
                    % (sys.executable, tag))
    fake.chmod(0o755)
    proc = subprocess.Popen([sys.executable, DSMEXEC, "--python", str(fake), "--connect-timeout",
                             "0.5", machine_file(tmp_path, "localhost"), HELPER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    err = wait_for_lines(proc, 1, "did not register", stream=proc.stderr)
    status, rest = stop(proc, signal.SIGINT)
    err = err.decode() + rest
    assert status == 130, err
    assert "dsmexec: got SIGINT, killing the job now" in err
    assert wait_gone(tag) == []
