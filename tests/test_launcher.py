"""dsmexec end to end with local ranks: output, exit status, errors, signals, no leftovers."""
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import (DSMEXEC, HELPER, REPO, machine_file, run_dsmexec, wait_for_lines,
                      wait_gone)

pytestmark = pytest.mark.timeout(90)


def local_hosts(tmp_path, n):
    """A machine file of n local ranks, with comments, so rank r is on line r + 2."""
    return machine_file(tmp_path, "# local ranks", *["localhost  # rank %d" % r for r in range(n)])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_every_rank_prints_with_its_prefix_on_the_right_stream(tmp_path, tag, n):
    r = run_dsmexec(local_hosts(tmp_path, n), HELPER, "--rank-print", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == [
        "[rank %d] hello from rank %d of %d" % (i, i, n) for i in range(n)]
    assert sorted(r.stderr.splitlines()) == ["[rank %d] stderr of rank %d" % (i, i) for i in range(n)]
    assert "DSMEXEC-READY" not in r.stdout + r.stderr


def test_no_prefix(tmp_path, tag):
    r = run_dsmexec("--no-prefix", local_hosts(tmp_path, 2), HELPER, "--rank-print", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["hello from rank 0 of 2", "hello from rank 1 of 2"]


def test_lines_are_never_split_or_mixed(tmp_path, tag):
    n, lines = 4, 400
    r = run_dsmexec(local_hosts(tmp_path, n), HELPER, "--lines", str(lines), "--tag", tag)
    assert r.returncode == 0, r.stderr
    for stream, lead in ((r.stdout, ""), (r.stderr, "err ")):
        seen = {}
        for line in stream.splitlines():
            m = re.fullmatch(r"\[rank (\d)\] %s(r\1-i(\d+)-){40}\|end" % lead, line)
            assert m, "split or mixed line: %r" % line[:200]
            rank, i = int(m.group(1)), int(m.group(3))
            assert i == seen.get(rank, -1) + 1, "rank %d lines out of order" % rank
            seen[rank] = i
        assert seen == {rank: lines - 1 for rank in range(n)}


@pytest.mark.parametrize("n", [2, 4])
def test_exit_status_of_the_failing_rank_is_propagated_and_named(tmp_path, tag, n):
    r = run_dsmexec(local_hosts(tmp_path, n), HELPER, "--fail", "1:3", "--tag", tag)
    assert r.returncode == 3
    assert "dsmexec: rank 1 (host localhost, line 3) exited with status 3" in r.stderr


def test_killed_rank_gives_128_plus_signal(tmp_path, tag):
    hosts = local_hosts(tmp_path, 2)
    r = run_dsmexec(hosts, HELPER, "--kill", "0:%d" % signal.SIGKILL, "--sleep", "30", "--tag", tag)
    assert r.returncode == 128 + signal.SIGKILL
    assert "rank 0 (host localhost, line 2) was killed by signal 9 (SIGKILL)" in r.stderr


@pytest.mark.parametrize("n", [1, 2])
def test_exception_gives_status_1_and_the_traceback(tmp_path, tag, n):
    r = run_dsmexec(local_hosts(tmp_path, n), HELPER, "--exception", "0:it broke", "--tag", tag)
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert "[rank 0] Traceback (most recent call last):" in err
    assert "[rank 0] RuntimeError: it broke" in err
    assert "dsmexec: rank 0 (host localhost, line 2) exited with status 1" in err
    # The rank's own output comes before dsmexec's verdict on it.
    assert err.index("[rank 0] RuntimeError: it broke") < err.index(
        "dsmexec: rank 0 (host localhost, line 2) exited with status 1")


def test_what_a_rank_started_does_not_outlive_the_job(tmp_path, tag):
    r = run_dsmexec(local_hosts(tmp_path, 2), HELPER, "--orphan", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert wait_gone(tag) == []     # the orphan sleeps an hour: dsmexec ended it


def test_init_without_finalize_is_an_error(tmp_path, tag):
    r = run_dsmexec(local_hosts(tmp_path, 2), HELPER, "--init-no-finalize", "--tag", tag)
    assert r.returncode == 1
    assert re.search(r"dsmexec: rank \d \(host localhost, line \d\) exited without calling "
                     r"finalize\(\)", r.stderr), r.stderr


def test_a_rank_that_never_registers_fails_the_job_by_its_connect_timeout(tmp_path, tag):
    # The fake rank would sleep an hour: only dsmexec's own clock can end the job.
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho DSMEXEC-READY 0\nexec %s -c 'import time; time.sleep(3600)' %s\n"
                    % (sys.executable, tag))
    fake.chmod(0o755)
    r = run_dsmexec("--python", str(fake), "--connect-timeout", "1", local_hosts(tmp_path, 1),
                    HELPER)
    assert r.returncode == 1
    assert "dsmexec: rank 0 (host localhost, line 2) did not register within 6 s" in r.stderr


def test_an_interpreter_that_does_not_exist_is_named(tmp_path):
    r = run_dsmexec("--python", str(tmp_path / "nope"), local_hosts(tmp_path, 2), HELPER)
    assert r.returncode == 1
    assert "dsmexec: rank 0 (host localhost, line 2): cannot start %s: No such file or " \
        "directory" % (tmp_path / "nope") in r.stderr


@pytest.mark.parametrize("lines, where", [
    (["localhost", "", "bad host"], "line 3: 'bad host': whitespace inside an entry"),
    (["# c", "@localhost"], "line 2: '@localhost': empty user"),
    (["localhost", "root@"], "line 2: 'root@': empty host"),
    (["h;rm -rf"], "line 1"),
    (["# only a comment", ""], "names no host"),
])
def test_bad_machine_file_is_named_with_its_line(tmp_path, lines, where):
    path = machine_file(tmp_path, *lines)
    r = run_dsmexec(path, HELPER)
    assert r.returncode == 1
    assert r.stderr.startswith("dsmexec: error: machine file %s" % path)
    assert where in r.stderr


def test_missing_machine_file(tmp_path):
    r = run_dsmexec(str(tmp_path / "nope"), HELPER)
    assert r.returncode == 1
    assert "machine file %s: cannot read it: No such file or directory" % (tmp_path / "nope") \
        in r.stderr


@pytest.mark.parametrize("argv", [[], ["only_machine_file"], ["--connect-timeout", "0", "m", "p"],
                                  ["--bogus", "m", "p"]])
def test_usage_error_prints_synopsis_and_exits_1(argv):
    r = run_dsmexec(*argv)
    assert r.returncode == 1
    assert "usage: dsmexec " in r.stderr
    assert "error:" in r.stderr
    assert "--help" in r.stderr
    assert r.stdout == ""


def test_program_options_pass_through_untouched(tmp_path, tag):
    # "-o" and "--no-prefix" after prog belong to prog, not to dsmexec.
    prog = tmp_path / "argv.py"
    prog.write_text("import sys; print(sys.argv[1:])\n")
    r = run_dsmexec(local_hosts(tmp_path, 1), str(prog), "-o", "x", "--no-prefix", tag)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[rank 0] ['-o', 'x', '--no-prefix', %r]\n" % tag


def test_dsm_variables_reach_the_ranks_and_cwd_is_kept(tmp_path, tag):
    prog = tmp_path / "env.py"
    prog.write_text("import os; print(os.environ.get('DSM_TEST_VALUE'), os.getcwd())\n")
    env = dict(os.environ, DSM_TEST_VALUE="a b")
    r = run_dsmexec(local_hosts(tmp_path, 1), str(prog), tag, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[rank 0] a b %s\n" % tmp_path


def start_sleeping_job(tmp_path, tag, n=3):
    """Start dsmexec with n ranks that sleep an hour (past any test's timeout: only a
    teardown ends them); return (Popen, stdout seen) once all sleep."""
    proc = subprocess.Popen([sys.executable, DSMEXEC, local_hosts(tmp_path, n), HELPER,
                             "--sleep", "3600", "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    return proc, wait_for_lines(proc, n, "sleeping")


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_dsmexec_tears_the_job_down(tmp_path, tag, sig, status):
    proc, _ = start_sleeping_job(tmp_path, tag)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == status
    assert "dsmexec: got %s, stopping the job" % signal.Signals(sig).name in err.decode()
    assert wait_gone(tag) == []


def test_failure_of_one_rank_stops_the_sleeping_others(tmp_path, tag):
    # The others sleep an hour: the job ends only if the failure stops them.
    r = run_dsmexec(local_hosts(tmp_path, 3), HELPER, "--sleep", "3600", "--kill", "2:15",
                    "--tag", tag)
    assert r.returncode == 128 + 15
    assert "rank 2 (host localhost, line 4) was killed by signal 15 (SIGTERM)" in r.stderr


def test_an_all_local_job_listens_on_loopback_only(tmp_path, tag):
    r = run_dsmexec(local_hosts(tmp_path, 2), HELPER, "--listener", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert sorted(line.split()[3] for line in r.stdout.splitlines()) == ["127.0.0.1"] * 2
