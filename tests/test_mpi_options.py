"""The options an MPI user reaches for: -n/-np, host slots, -x, --wdir,
--output-filename, --timeout and stdin to rank 0; locally and over ssh."""
import os

import pytest

from conftest import HELPER, machine_file, run_dsmexec
from libdsm_services import cli, machinefile

pytestmark = pytest.mark.timeout(90)

ENV_PROG = """\
import os, sys, libdsm_services.rank as r
rank = r.CONTEXT.rank
data = sys.stdin.read()
print(rank, os.environ.get("FOO"), os.environ.get("OMP_NUM_THREADS"),
      "/opt/mylib" in os.environ.get("PYTHONPATH", "").split(os.pathsep), os.getcwd(), repr(data))
print("err of", rank, file=sys.stderr)
"""


# ---------------------------------------------------------------- pure parts

@pytest.mark.parametrize("words, split", [
    (["m", "p.py", "a"], ("m", "p.py", ["a"])),
    (["p.py", "a"], (None, "p.py", ["a"])),
    (["prog"], (None, "prog", [])),
    (["hosts", "python3", "p.py"], ("hosts", "p.py", [])),
    (["python", "-m", "pkg.mod", "x"], (None, "pkg.mod", ["x"])),
])
def test_split_words(words, split):
    found = cli.split_words(words, "/")
    assert (found.machine_file, found.prog, found.args) == split


def test_split_words_without_a_machine_file_allowed():
    assert cli.split_words(["m", "p.py"], "/", machine_file_allowed=False).prog == "m"
    assert cli.split_words([], "/") == "no PROG given"


def test_exports():
    env = {"FOO": "bar"}
    assert cli.exports(["FOO", "A=1=2", "B="], env) == {"FOO": "bar", "A": "1=2", "B": ""}
    assert "BAR is not set here" in cli.exports(["BAR"], env)
    assert "not a variable name" in cli.exports(["1X=2"], env)


def test_slots_give_consecutive_ranks(tmp_path):
    path = machine_file(tmp_path, "a slots=2", "u@b:3  # mpich", "::1", "c")
    hosts = machinefile.parse(path)
    assert [(h.target, h.lineno) for h in hosts] == [
        ("a", 1), ("a", 1), ("u@b", 2), ("u@b", 2), ("u@b", 2), ("::1", 3), ("c", 4)]
    assert [h.target for h in machinefile.parse(path, 3)] == ["a", "a", "u@b"]
    with pytest.raises(machinefile.MachineFileError, match="has 7 slots, -n asks for 8"):
        machinefile.parse(path, 8)


@pytest.mark.parametrize("text, reason", [("a slots=0", "at least 1 slot"),
                                          ("a:0", "at least 1 slot"),
                                          ("a max_slots=2", "whitespace inside an entry")])
def test_bad_slots(text, reason):
    with pytest.raises(ValueError, match=reason):
        machinefile.parse_line(text)


# ---------------------------------------------------------------- real ranks

def test_n_without_machine_file_runs_local_ranks(tmp_path, tag):
    r = run_dsmexec("-n", "3", HELPER, "--rank-print", "--tag", tag)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[rank %d] hello from rank %d of 3" % (i, i)
                                             for i in range(3)]
    r = run_dsmexec("-np", "2", HELPER, "--fail", "1:4", "--tag", tag)
    assert r.returncode == 4
    assert "dsmexec: rank 1 (host localhost) exited with status 4" in r.stderr


def test_np_takes_the_first_slots_of_the_machine_file(tmp_path, tag):
    hosts = machine_file(tmp_path, "localhost slots=2", "localhost:2")
    r = run_dsmexec("-np", "3", hosts, HELPER, "--fail", "2:5", "--tag", tag)
    assert r.returncode == 5
    assert "dsmexec: rank 2 (host localhost, line 2) exited with status 5" in r.stderr
    r = run_dsmexec("-n", "5", hosts, HELPER, "--tag", tag)
    assert r.returncode == 1
    assert "has 4 slots, -n asks for 5" in r.stderr


def job_argv(tmp_path, *extra):
    prog = tmp_path / "work" / "env.py"
    prog.parent.mkdir(exist_ok=True)
    prog.write_text(ENV_PROG)
    return ["-x", "FOO", "-x", "OMP_NUM_THREADS=1", "--wdir", str(prog.parent),
            "--output-filename", str(tmp_path / "out"), *extra]


def user_env():
    return dict(os.environ, FOO="bar", PYTHONPATH="/tmp/x:/opt/mylib")


def check_job(r, tmp_path, n=2):
    assert r.returncode == 0, r.stderr
    work = tmp_path / "work"
    want = ["%d bar 1 True %s %r" % (i, work, "line one\nline two\n" if i == 0 else "")
            for i in range(n)]
    assert sorted(r.stdout.splitlines()) == ["[rank %d] %s" % (i, w) for i, w in enumerate(want)]
    assert sorted(r.stderr.splitlines()) == ["[rank %d] err of %d" % (i, i) for i in range(n)]
    for i in range(n):
        assert (tmp_path / "out" / ("rank.%d.stdout" % i)).read_text() == want[i] + "\n"
        assert (tmp_path / "out" / ("rank.%d.stderr" % i)).read_text() == "err of %d\n" % i


def test_environment_wdir_output_files_and_stdin_locally(tmp_path):
    r = run_dsmexec(*job_argv(tmp_path, "-n", "2"), "env.py", env=user_env(), cwd="/",
                    input="line one\nline two\n")
    check_job(r, tmp_path)


def test_the_same_over_ssh(tmp_path, sshd):
    hosts = machine_file(tmp_path, "localhost", "127.0.0.1")
    r = run_dsmexec(*sshd.options(), *job_argv(tmp_path), hosts, "env.py", env=user_env(), cwd="/",
                    input="line one\nline two\n")
    check_job(r, tmp_path)
    assert "FOO" not in open(hosts).read()      # nothing of it in a file either


def test_timeout_stops_the_job_with_its_own_status(tmp_path, tag):
    # The ranks sleep an hour: only --timeout, on dsmexec's own clock, ends the job.
    r = run_dsmexec("--timeout", "1", "-n", "2", HELPER, "--sleep", "3600", "--tag", tag)
    assert r.returncode == 124
    assert "dsmexec: the job ran past --timeout 1 s: stopping it" in r.stderr


def test_large_stdin_reaches_rank_0_whole(tmp_path, tag):
    prog = tmp_path / "count.py"
    prog.write_text("import sys, hashlib\nd = sys.stdin.buffer.read()\n"
                    "print(len(d), hashlib.sha256(d).hexdigest()[:12])\n")
    data = os.urandom(300000).hex()
    import hashlib
    r = run_dsmexec("-n", "1", str(prog), input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[rank 0] %d %s\n" % (len(data), hashlib.sha256(data.encode()).hexdigest()[:12])


@pytest.mark.parametrize("argv, said", [
    (["-x", "NOT_SET_HERE_X", "-n", "1", "p.py"], "NOT_SET_HERE_X is not set here"),
    (["--timeout", "0", "-n", "1", "p.py"], "--timeout must be positive"),
    (["-n", "0", "p.py"], "-n must be positive"),
])
def test_usage_errors(argv, said):
    r = run_dsmexec(*argv)
    assert r.returncode == 1 and said in r.stderr and "usage: dsmexec" in r.stderr


def test_a_background_terminal_is_not_read(monkeypatch):
    from libdsm_services import job
    monkeypatch.setattr(job.os, "isatty", lambda fd: True)
    monkeypatch.setattr(job.os, "tcgetpgrp", lambda fd: 4242)
    monkeypatch.setattr(job.os, "getpgrp", lambda: 4243)
    assert not job.readable_stdin(0)
    monkeypatch.setattr(job.os, "getpgrp", lambda: 4242)
    assert job.readable_stdin(0)
    monkeypatch.setattr(job.os, "isatty", lambda fd: False)
    assert job.readable_stdin(0)
