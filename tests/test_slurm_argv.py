"""services/slurm.py without Slurm: the argv builders, srun's reports, the allocation."""
import os
import signal
import subprocess
import sys

import pytest

from libdsm_services import iomux, job, slurm, srun


def test_srun_argv_one_step_labelled_stdin_to_all():
    assert slurm.srun_argv(4, ["sh", "-c", "x"]) == [
        "srun", "--ntasks=4", "--distribution=block", "--label", "--input=all",
        "--kill-on-bad-exit=0", "sh", "-c", "x"]


def test_salloc_argv_reruns_dsmexec_inside():
    opts = job.Options(machine_file=None, prog="p.py", args=["-n", "x"], python="/py",
                       connect_timeout=2.5, prefix=False, launcher="slurm", ntasks=3, cwd="/w")
    assert slurm.salloc_argv(3, slurm.rerun_argv(opts, ["/d/dsmexec.py"], "/me")) == [
        "salloc", "--quiet", "--ntasks=3", "/me", "/d/dsmexec.py", "--launcher", "slurm",
        "--connect-timeout", "2.5", "--no-prefix", "--python", "/py", "--wdir", "/w",
        "-n", "3", "p.py", "-n", "x"]
    opts = job.Options(machine_file=None, prog="p.py", python="/py", launcher="slurm",
                       ntasks=2, cwd="/w", timeout=9, output_dir="/o", exports={"A": "1 2"})
    assert slurm.rerun_argv(opts, [], "/me") == [
        "/me", "--launcher", "slurm", "--connect-timeout", "10", "--timeout", "9",
        "--output-filename", "/o", "-x", "A=1 2", "--python", "/py", "--wdir", "/w",
        "-n", "2", "p.py"]


def test_a_module_is_passed_on_as_dash_m_and_to_the_bootstrap_as_module():
    opts = job.Options(machine_file=None, prog="pkg.mod", args=["x"], module=True,
                       python="/py", launcher="slurm", ntasks=2, cwd="/w")
    assert slurm.rerun_argv(opts, [], "/me")[-4:] == ["2", "-m", "pkg.mod", "x"]


def test_task_argv_keeps_the_program_out_of_the_shell_text():
    argv = slurm.task_argv("/py thon", 4242, "my prog.py", ["$HOME", "a b"])
    assert argv[:2] == ["sh", "-c"]
    assert argv[3:] == ["/py thon", "my prog.py", "$HOME", "a b"]
    assert "4242" in argv[2] and "$SLURM_PROCID" in argv[2]
    assert "$SLURM_LAUNCH_NODE_IPADDR" in argv[2]


def test_task_argv_runs_the_bootstrap_with_the_tasks_rank():
    argv = slurm.task_argv("python3", 99, "-c", ["import libdsm_services.rank as r; print(r.READY)"])
    env = {"SLURM_PROCID": "3", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.9", "PATH": "/bin:/usr/bin"}
    shown = subprocess.run(argv[:3] + ["echo"] + argv[4:], env=env, capture_output=True,
                           text=True).stdout.split()
    assert shown[:6] == ["-u", "-m", "libdsm_services.rank", "--rank", "3", "--master"]
    assert shown[6:8] == ["10.0.0.9:99", "-c"]


@pytest.mark.parametrize("spec,counts", [("4", [4]), ("2(x3),1", [2, 2, 2, 1]),
                                         ("1,3(x2)", [1, 3, 3])])
def test_expand_counts(spec, counts):
    assert slurm.expand_counts(spec) == counts


def test_expand_counts_refuses_garbage():
    with pytest.raises(slurm.SlurmError, match="SLURM_TASKS_PER_NODE"):
        slurm.expand_counts("two")


def test_rank_hosts_block():
    assert slurm.rank_hosts(["a", "b"], [2, 1], 3) == ["a", "a", "b"]
    assert slurm.rank_hosts(["a", "b"], [2, 2], 2) == ["a", "a"]


@pytest.mark.parametrize("line,codes", [
    ("srun: error: vm: task 2: Exited with exit code 3", {2: 3}),
    ("srun: error: n1: tasks 0,2-3: Exited with exit code 1", {0: 1, 2: 1, 3: 1}),
    ("srun: error: vm: task 1: Segmentation fault (core dumped)", {1: -signal.SIGSEGV}),
    ("srun: error: vm: task 0: Killed", {0: -signal.SIGKILL}),
    ("srun: error: Unable to allocate resources: Invalid partition", None),
    ("srun: Job step aborted", None),
])
def test_parse_exit(line, codes):
    assert srun.parse_exit(line) == codes


@pytest.mark.parametrize("line,split", [(b"0: hello", (0, b"hello")),
                                        (b"12: a: b", (12, b"a: b")),
                                        (b" 3: x", (3, b"x")),
                                        (b"srun: error", (None, b"srun: error"))])
def test_split_label(line, split):
    assert srun.split_label(line) == split


@pytest.mark.parametrize("argv,environ,chosen", [
    (["m", "p.py"], {}, "ssh"),
    (["p.py"], {"SLURM_JOB_ID": "7"}, "slurm"),
    (["--launcher", "ssh", "m", "p.py"], {"SLURM_JOB_ID": "7"}, "ssh"),
    (["--launcher=slurm", "p.py"], {}, "slurm"),
    (["m", "p.py", "--launcher", "slurm"], {}, "ssh"),     # the program's own argument
])
def test_launcher(argv, environ, chosen):
    assert slurm.launcher(argv, environ) == chosen


class FakeRun:
    def __init__(self, stdout, returncode=0):
        self.stdout, self.returncode, self.argv = stdout, returncode, None

    def __call__(self, argv, **kw):
        self.argv = argv
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, "bad")


def test_allocation_hosts_from_scontrol():
    run = FakeRun("n1\nn2\n")
    env = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "3", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_TASKS_PER_NODE": "2,1"}
    hosts = slurm.allocation(env, run=run)
    assert run.argv == ["scontrol", "show", "hostnames", "n[1-2]"]
    assert [h.host for h in hosts] == ["n1", "n1", "n2"]
    assert [h.host for h in slurm.allocation(env, ntasks=2, run=run)] == ["n1", "n1"]


@pytest.mark.parametrize("env,message", [
    ({}, "needs a Slurm allocation"),
    ({"SLURM_JOB_ID": "5"}, "give -n"),
    ({"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1025"},
     "the allocation has 1025 tasks, but a job has at most 1024 ranks: give -n N"),
])
def test_allocation_errors(env, message):
    with pytest.raises(slurm.SlurmError, match=message):
        slurm.allocation(env, run=FakeRun("n1"))


def test_allocation_scontrol_failure():
    env = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "x"}
    with pytest.raises(slurm.SlurmError, match="scontrol show hostnames x failed: bad"):
        slurm.allocation(env, run=FakeRun("", returncode=1))


FAKE_SRUN = r'''
import sys
secret = sys.stdin.readline().strip()
out, err = sys.stdout, sys.stderr
out.write("0: DSMEXEC-READY 0\n1: DSMEXEC-READY 1\n0: hello\n1: secret %d\n" % len(secret))
err.write("1: oops\nsrun: error: vm: task 1: Exited with exit code 3\nsrun: other\n")
out.write("1: last")
'''


def test_step_cuts_srun_output_into_ranks():
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    step = srun.Step([sys.executable, "-c", FAKE_SRUN], dict(os.environ), ".", b"\x01" * 16,
                     2, iomux.Sink(out_w), iomux.Sink(err_w))
    step.finish()
    os.close(out_w)
    os.close(err_w)
    assert os.read(out_r, 4096).decode().splitlines() == [
        "[rank 0] hello", "[rank 1] secret 32", "[rank 1] last"]
    assert os.read(err_r, 4096).decode().splitlines() == ["[rank 1] oops", "srun: other"]
    assert [t.poll() for t in step.tasks] == [0, 3]     # srun exited 0: only task 1 failed
    step.close()
    os.close(out_r)
    os.close(err_r)
