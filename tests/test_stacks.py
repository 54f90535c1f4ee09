"""A hung job shows where it is stuck: on --timeout, on Ctrl-C and on a second signal
dsmexec prints every rank's Python stack before it stops the job (services/stacks.py;
issue 21, point 9)."""
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import DSMEXEC, REPO, machine_file, run_dsmexec, wait_for_lines, wait_gone

pytestmark = pytest.mark.timeout(90)
DEADLOCK = os.path.join(REPO, "tests", "deadlock_prog.py")
BARRIER_LINE, ACQUIRE_LINE = 10, 9      # where its ranks block


def check_stacks(err, prog, blocked=True):
    """Each rank printed its main thread's stack: with `blocked`, at the call it blocks in
    (else the signal may have come before it got there: somewhere in the program)."""
    for rank, line, call in ((0, BARRIER_LINE, "barrier"), (1, ACQUIRE_LINE, "acquire")):
        mine = [s for s in err.splitlines() if s.startswith("[rank %d] " % rank)]
        frames = "\n".join(mine)
        assert any(s.startswith("[rank %d] Current thread 0x" % rank) for s in mine), err
        if not blocked:
            assert re.search(r'File "%s", line \d+ in <module>' % re.escape(prog), frames), err
            continue
        assert '[rank %d]   File "%s", line %d in <module>' % (rank, prog, line) in mine, err
        assert re.search(r"line \d+ in %s\n(.*\n)*.*File \"%s\", line %d" % (call, re.escape(prog),
                                                                              line), frames), err


def test_timeout_prints_every_ranks_stack_then_stops(tag):
    prog = DEADLOCK
    r = run_dsmexec("-n", "2", "--timeout", "5", prog, tag)
    assert r.returncode == 124, r.stderr
    lines = r.stderr.splitlines()
    said = "dsmexec: the job ran past --timeout 5 s: stopping it, after every rank's stack"
    assert said in lines, r.stderr
    check_stacks(r.stderr, prog)
    first_frame = min(i for i, s in enumerate(lines) if "deadlock_prog.py" in s)
    assert lines.index(said) < first_frame          # said first, then the stacks
    # and the C core's word on what each waits for (libdsm/csrc/waitsig.c)
    assert "[rank 1] libdsm: rank 1: its threads wait in libdsm for:" in lines, r.stderr
    assert re.search(r"^\[rank 1\] thread \d+: lock 0$", r.stderr, re.M), r.stderr
    assert re.search(r"^\[rank 0\] thread \d+: collective barrier #\d+$", r.stderr, re.M), \
        r.stderr


def started_job(tag, *opts):
    proc = subprocess.Popen([sys.executable, DSMEXEC, *opts, DEADLOCK, tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=REPO)
    wait_for_lines(proc, 2, "ready")
    return proc, DEADLOCK


def finish(proc, tag, seen=b""):
    try:
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert wait_gone(tag) == []
    return (seen + err).decode()


def test_ctrl_c_prints_every_ranks_stack_then_stops(tag):
    proc, prog = started_job(tag, "-n", "2")
    proc.send_signal(signal.SIGINT)
    err = finish(proc, tag)
    assert proc.returncode == 130, err
    assert "dsmexec: got SIGINT, stopping the job" in err.splitlines()
    check_stacks(err, prog, blocked=False)


def test_a_second_signal_prints_the_stacks_again_and_kills(tag):
    proc, prog = started_job(tag, "-n", "2")
    proc.send_signal(signal.SIGINT)
    seen = wait_for_lines(proc, 1, "got SIGINT, stopping the job\n", stream=proc.stderr)
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, tag, seen)
    assert proc.returncode == 130, err
    assert "dsmexec: got SIGTERM, killing the job now" in err.splitlines()
    later = err.split("killing the job now")[1]
    check_stacks(later, prog, blocked=False)


def test_over_ssh_the_request_goes_on_the_ranks_connection(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", "127.0.0.1")
    r = run_dsmexec(*sshd.options(), "--timeout", "8", hosts, DEADLOCK, tag)
    assert r.returncode == 124, r.stderr
    check_stacks(r.stderr, DEADLOCK)


def test_a_rank_asked_before_it_registered_is_not_killed_by_the_request(tmp_path):
    """The request goes only to registered ranks, and the bootstrap registers its handler
    before registering: SIGUSR1's default action (death) never reaches a rank."""
    from libdsm_services import stacks
    code = ("import os, signal, sys; from libdsm_services import stacks; stacks.register(); "
            "os.kill(os.getpid(), stacks.REQUEST_SIGNAL); print('alive')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.stdout == "alive\n" and "most recent call first" in r.stderr
    assert stacks.REQUEST_SIGNAL == signal.SIGUSR1
