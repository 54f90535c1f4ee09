"""Errors a user can read: the program's own frames, tracebacks kept whole, a
failing rank's last words, one message for a missing program, a host-key hint."""
import os
import re

import pytest

from conftest import HELPER, machine_file, run_dsmexec

pytestmark = pytest.mark.timeout(90)


def test_a_traceback_shows_the_programs_frames_only(tag):
    r = run_dsmexec("-n", "1", HELPER, "--exception", "0:it broke", "--tag", tag)
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.startswith("[rank 0]")]
    assert lines[0] == "[rank 0] Traceback (most recent call last):"
    assert lines[-1] == "[rank 0] RuntimeError: it broke"
    files = re.findall(r'File "([^"]+)"', r.stderr)
    assert files and set(files) == {HELPER}, r.stderr       # no runpy, no rank.py


def test_tracebacks_of_several_ranks_stay_whole(tmp_path):
    n = 4
    prog = tmp_path / "all_raise.py"
    prog.write_text("import libdsm_services.rank as r\n"
                    "def f(k):\n    if k: f(k - 1)\n    raise ValueError('rank %d' % r.CONTEXT.rank)\n"
                    "f(30)\n")
    r = run_dsmexec("-n", str(n), str(prog))
    assert r.returncode == 1
    ranks_in_order = [int(m) for m in re.findall(r"^\[rank (\d)\]", r.stderr, re.M)]
    # Each rank's lines form one run: a rank never reappears after another's line.
    runs = [k for i, k in enumerate(ranks_in_order) if i == 0 or ranks_in_order[i - 1] != k]
    assert len(runs) == len(set(runs)), r.stderr
    # The first to fail ends the job; every traceback that came out is whole.
    tracebacks = re.findall(r"^\[rank (\d)\] Traceback", r.stderr, re.M)
    assert tracebacks
    for k in tracebacks:
        assert "[rank %s] ValueError: rank %s" % (k, k) in r.stderr.splitlines(), r.stderr


def test_a_rank_that_fails_because_of_another_gets_to_finish_its_traceback(tag, tmp_path):
    # rank 1 exits once rank 0 told dsmexec it lost a peer: on a loaded machine
    # rank 1 could otherwise exit before rank 0 even started
    r = run_dsmexec("-n", "2", HELPER, "--lost-peer", "0", "--fail", "1:3", "--deep", "3",
                    "--told", str(tmp_path / "told"), "--tag", tag)
    assert r.returncode == 3, r.stderr
    assert "dsmexec: rank 1 (host localhost) exited with status 3" in r.stderr
    lines = r.stderr.splitlines()
    assert "[rank 0] RuntimeError: lost my peer" in lines, r.stderr
    assert "lost the connection to dsmexec" not in r.stderr


def test_a_missing_program_is_one_usage_error(tmp_path):
    r = run_dsmexec("-n", "3", str(tmp_path / "nope.py"))
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == "dsmexec: error: %s: no such file" % (tmp_path / "nope.py")
    r = run_dsmexec("--wdir", str(tmp_path), "-n", "2", "nope.py")
    assert r.stderr.splitlines()[0] == "dsmexec: error: nope.py: no such file in %s" % tmp_path


def test_a_missing_program_on_ssh_hosts_is_reported_once(tmp_path, sshd, tag):
    hosts = machine_file(tmp_path, "localhost", "127.0.0.1", "localhost")
    r = run_dsmexec(*sshd.options(), hosts, str(tmp_path / "nope.py"), tag)
    assert r.returncode == 1
    said = [l for l in r.stderr.splitlines() if l]
    assert len(said) == 1, r.stderr
    assert re.fullmatch(r"dsmexec: rank \d \(host [\w.]+, line \d\): %s: no such file in \S+ on \S+"
                        % re.escape(str(tmp_path / "nope.py")), said[0]), said


def test_an_unknown_host_key_gets_a_hint(tmp_path, sshd, tag):
    known = tmp_path / "known_hosts"
    known.write_text("")
    opts = ["--ssh-all", "-i", sshd.key, "-o", "Port=%d" % sshd.port,
            "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=%s" % known]
    r = run_dsmexec(*opts, machine_file(tmp_path, "localhost"), HELPER, "--tag", tag)
    assert r.returncode == 1
    assert "host key of localhost is not known (line 1): add it to ~/.ssh/known_hosts" in r.stderr
    assert "StrictHostKeyChecking=accept-new" in r.stderr
    # ... and the hint works: accept-new lets the job through and records the key.
    opts[opts.index("StrictHostKeyChecking=yes")] = "StrictHostKeyChecking=accept-new"
    r = run_dsmexec(*opts, machine_file(tmp_path, "localhost"), HELPER, "--rank-print",
                    "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(known) > 0
