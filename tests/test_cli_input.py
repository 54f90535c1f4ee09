"""dsmexec's command line as an mpirun user types it, and bad input refused before
any rank starts: one usage error (error line, synopsis, hint), status 1 (issue 21,
points 5 and 11)."""
import os
import re
import sys

import pytest

from conftest import HELPER, REPO, machine_file, run_dsmexec
from libdsm_services import cli, machinefile, spawn

pytestmark = pytest.mark.timeout(90)
MARKER_PROG = """\
import os, sys, libdsm_services.rank as r
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "started-%d" % r.CONTEXT.rank),
     "w").close()
print("rank", r.CONTEXT.rank, "of", r.CONTEXT.size, sys.argv[1:])
"""


def usage_error(r):
    """The error line of a usage error, after checking its shape: nothing ran."""
    lines = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert lines[0].startswith("dsmexec: error: "), r.stderr
    assert lines[1].startswith("usage: dsmexec "), r.stderr
    assert lines[-1] == "Try 'dsmexec --help' for more information.", r.stderr
    assert "Traceback" not in r.stderr
    return lines[0][len("dsmexec: error: "):]


@pytest.fixture
def prog(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(MARKER_PROG)
    return path


def started(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("started-"))


def ranks_said(r):
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.splitlines())


# ---------------------------------------------------------------- mpirun's forms

@pytest.mark.parametrize("interpreter", ["python", "python3", sys.executable])
def test_an_interpreter_before_the_program_is_taken_as_mpirun_takes_it(prog, interpreter):
    r = run_dsmexec("-n", "2", interpreter, str(prog), "a", "-b")
    assert ranks_said(r) == ["[rank %d] rank %d of 2 ['a', '-b']" % (i, i) for i in range(2)]


def test_a_module_runs_with_dash_m(tmp_path, prog):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "job.py").write_text(MARKER_PROG.replace("__file__", "'..'"))
    r = run_dsmexec("--wdir", str(tmp_path), "-n", "2", "-m", "pkg.job", "x", "--y")
    assert ranks_said(r) == ["[rank %d] rank %d of 2 ['x', '--y']" % (i, i) for i in range(2)]
    r = run_dsmexec("--wdir", str(tmp_path), "-n", "1", "python", "-m", "pkg.nope")
    assert r.returncode == 1
    assert "no module named pkg.nope in %s on" % tmp_path in r.stderr


def test_a_module_over_ssh(tmp_path, sshd):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "job.py").write_text(MARKER_PROG.replace("__file__", "'..'"))
    r = run_dsmexec(*sshd.options(), "--wdir", str(tmp_path), "-H", "localhost,127.0.0.1",
                    "-m", "pkg.job", "x")
    assert ranks_said(r) == ["[rank %d] rank %d of 2 ['x']" % (i, i) for i in range(2)]


def test_the_bootstrap_gets_a_module_as_module():
    argv = spawn.rank_argv("/py", 1, "m:1", "pkg.mod", ["a"], module=True)
    assert argv[-3:] == ["--module", "pkg.mod", "a"]


def test_hosts_on_the_command_line_with_slots(prog):
    r = run_dsmexec("-H", "localhost,127.0.0.1:2", str(prog))
    assert ranks_said(r) == ["[rank %d] rank %d of 3 []" % (i, i) for i in range(3)]
    r = run_dsmexec("-H", "localhost:2", "-n", "3", str(prog))
    assert usage_error(r) == "-H localhost:2: has 2 slots, -n asks for 3 ranks"


def test_without_n_hosts_or_machine_file_the_ranks_are_this_machines_cores(prog):
    r = run_dsmexec(str(prog))
    n = min(os.cpu_count(), machinefile.MAX_RANKS)
    assert ranks_said(r) == sorted("[rank %d] rank %d of %d []" % (i, i, n) for i in range(n))


def test_with_n_the_program_need_not_end_in_py(tmp_path, prog):
    script = tmp_path / "script"
    script.write_text(MARKER_PROG)
    r = run_dsmexec("-n", "2", str(script), "arg")
    assert ranks_said(r) == ["[rank %d] rank %d of 2 ['arg']" % (i, i) for i in range(2)]


def test_a_machine_file_first_still_works_and_ambiguity_names_both_readings(tmp_path, prog):
    hosts = machine_file(tmp_path, "localhost", "localhost")
    r = run_dsmexec(hosts, str(prog), "x")
    assert ranks_said(r) == ["[rank %d] rank %d of 2 ['x']" % (i, i) for i in range(2)]
    r = run_dsmexec(hosts, "python", str(prog))
    assert ranks_said(r) == ["[rank %d] rank %d of 2 []" % (i, i) for i in range(2)]
    assert usage_error(run_dsmexec(hosts, "nope")) == (
        "%r could be the MACHINE_FILE, but then PROG 'nope' is not there; or PROG, but it "
        "reads as a machine file" % hosts)
    assert usage_error(run_dsmexec("-n", "2", "nope", "x", cwd=str(tmp_path))) == (
        "'nope' is neither a MACHINE_FILE nor PROG: no such file in %s" % tmp_path)


# ---------------------------------------------------------------- refused before any start

def test_the_rank_limit_is_the_c_cores():
    with open(os.path.join(REPO, "libdsm", "csrc", "ground.h")) as f:
        limit = re.search(r"#define DSM_MAX_RANKS (\d+)", f.read()).group(1)
    assert machinefile.MAX_RANKS == int(limit)


def test_n_over_the_limit_is_one_line_and_starts_nothing(tmp_path, prog):
    r = run_dsmexec("-n", "1025", str(prog))
    assert usage_error(r) == "-n 1025: a job has at most 1024 ranks"
    assert len(r.stderr.splitlines()) == 5        # the error, 3 lines of synopsis, the hint
    assert started(tmp_path) == []


@pytest.mark.parametrize("hosts, error", [
    (",".join(["localhost"] * 1025), "-H names 1025 hosts, but a job has at most 1024 ranks"),
    ("localhost:1e20", "the slot count '1e20' is not a whole number from 1 to 1024"),
    ("a:-1", "the slot count '-1' is not a whole number from 1 to 1024"),
    ("a:1025", "'a:1025': 1025 slots, but a job has at most 1024 ranks"),
    ("a,,b", "an empty host between commas"),
])
def test_bad_hosts_are_refused(tmp_path, prog, hosts, error):
    assert error in usage_error(run_dsmexec("-H", hosts, str(prog)))
    assert started(tmp_path) == []


@pytest.mark.parametrize("line, error", [
    ("localhost slots=1e20", "the slot count '1e20' is not a whole number from 1 to 1024"),
    ("localhost slots=1e12", "the slot count '1e12' is not a whole number from 1 to 1024"),
    ("localhost slots=300000000", "'localhost slots=300000000': 300000000 slots, but a job "
                                  "has at most 1024 ranks"),
    ("localhost:" + "9" * 5000, "9999 slots, but a job has at most 1024 ranks"),
    ("localhost slots=3e8", "the slot count '3e8' is not a whole number from 1 to 1024"),
    ("localhost slots=-2", "the slot count '-2' is not a whole number from 1 to 1024"),
    ("localhost slots=1.5", "the slot count '1.5' is not a whole number from 1 to 1024"),
    ("localhost:2000", "'localhost:2000': 2000 slots, but a job has at most 1024 ranks"),
])
def test_absurd_slots_are_refused(tmp_path, prog, line, error):
    hosts = machine_file(tmp_path, "localhost", line)
    said = usage_error(run_dsmexec(hosts, str(prog)))
    assert said.startswith("machine file %s, line 2: " % hosts) and error in said
    assert started(tmp_path) == []


def test_a_huge_machine_file_is_refused_while_it_is_read(tmp_path, prog):
    hosts = machine_file(tmp_path, *["localhost"] * 10000)
    assert usage_error(run_dsmexec(hosts, str(prog))) == (
        "machine file %s, line 1025: more than 1024 slots, the most ranks a job can have; give "
        "-n N to use the first N" % hosts)
    assert started(tmp_path) == []
    r = run_dsmexec("-n", "2", hosts, str(prog))       # its first slots are fine
    assert ranks_said(r) == ["[rank %d] rank %d of 2 []" % (i, i) for i in range(2)]


def test_a_directory_is_no_program(tmp_path):
    (tmp_path / "d").mkdir()
    assert usage_error(run_dsmexec("-n", "2", str(tmp_path / "d"))) == (
        "%s is a directory, not a program" % (tmp_path / "d"))
    assert usage_error(run_dsmexec("--wdir", str(tmp_path), "-n", "2", "d")) == (
        "d is a directory in %s, not a program" % tmp_path)


def test_the_interpreters_own_options_are_refused(prog):
    assert usage_error(run_dsmexec("-n", "2", "python", "-u", str(prog))) == (
        "-u: the interpreter's options are not passed on; only -m MODULE is")


def test_is_interpreter():
    assert all(map(cli.is_interpreter, ["python", "python3.11", "/usr/bin/python3",
                                        sys.executable]))
    assert not any(map(cli.is_interpreter, ["prog.py", "pythonic", "hosts"]))
