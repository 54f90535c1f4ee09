"""dsmexec under a real, private Slurm: salloc, sbatch --wait, failures, signals; one node
(this machine), and two nodes that are network namespaces."""
import os
import signal
import subprocess
import sys
import uuid

import pytest

import slurmd
from conftest import DSMEXEC, HELPER, REPO, machine_file, pids_with, wait_for_lines, wait_gone
from dsmrun import rank_lines

pytestmark = pytest.mark.timeout(60)
MATMUL = os.path.join(REPO, "examples", "matmul.py")


def slurm_run(slurm, argv, **kw):
    """Run argv with this cluster's SLURM_CONF and a tag; nothing of the job may outlive it."""
    env = slurm.environ()
    env["DSM_TEST_TAG"] = uuid.uuid4().hex
    p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, **kw)
    left = wait_gone("DSM_TEST_TAG=" + env["DSM_TEST_TAG"], where="environ")
    assert not left, "processes outlived the job: %s" % left
    assert slurmd.queue_drains(slurm), "jobs left in the queue"
    return p


def dsmexec(*args):
    return [sys.executable, DSMEXEC, *args]


def test_salloc_runs_one_rank_per_task(slurm):
    p = slurm_run(slurm, ["salloc", "-n", "4", *dsmexec(MATMUL, "128")])
    assert p.returncode == 0, p.stderr
    assert "[rank 0] matmul n=128 on 4 ranks: max error 0: ok" in p.stdout.splitlines(), p.stdout


def test_sbatch_wait(slurm, tmp_path):
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n#SBATCH -n 3\n#SBATCH -o %s\nexec %s\n" % (
        out, " ".join(dsmexec(os.path.join(REPO, "examples", "sor.py"), "96", "30"))))
    p = slurm_run(slurm, ["sbatch", "--wait", "--chdir", REPO, str(script)])
    assert p.returncode == 0, (p.stderr, out.read_text())
    lines = out.read_text().splitlines()
    assert len([l for l in lines if l.startswith("[rank 0] ") and l.endswith("ok")]) == 1, lines


@pytest.mark.parametrize("how,status,said", [
    (["--fail", "1:3"], 3, "exited with status 3"),
    (["--kill", "2:9", "--sleep", "30"], 137, "was killed by signal 9 (SIGKILL)"),
])
def test_failing_rank_status_comes_through(slurm, how, status, said):
    p = slurm_run(slurm, ["salloc", "-n", "3", *dsmexec(HELPER, "--rank-print", *how)])
    assert p.returncode == status, p.stderr
    rank = int(how[1][0])
    assert "dsmexec: rank %d (host %s, Slurm task %d) %s" % (rank, slurm.node, rank, said) \
        in p.stderr.splitlines(), p.stderr
    for r in range(3):
        assert "[rank %d] hello from rank %d of 3" % (r, r) in p.stdout.splitlines(), p.stdout
        assert "[rank %d] stderr of rank %d" % (r, r) in p.stderr.splitlines(), p.stderr


def test_no_prefix(slurm):
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec("--no-prefix", HELPER, "--rank-print")])
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == ["hello from rank 0 of 2", "hello from rank 1 of 2"]


def test_failing_batch_job(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n#SBATCH -n 2\n#SBATCH -o %s\nexec %s\n" % (
        tmp_path / "job.out", " ".join(dsmexec(HELPER, "--fail", "0:5"))))
    p = slurm_run(slurm, ["sbatch", "--wait", "--chdir", REPO, str(script)])
    assert p.returncode == 5, (p.stderr, (tmp_path / "job.out").read_text())


def test_secret_only_on_stdin(slurm, tmp_path):
    """The rank knows the secret; no command line and no environment of the job shows it."""
    prog = tmp_path / "secret_prog.py"
    prog.write_text(
        "import os, libdsm_services.rank\n"
        "s = libdsm_services.rank.CONTEXT.secret.hex()\n"
        "seen = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "def shows(pid):\n"
        "    try:\n"
        "        return any(s.encode() in open('/proc/%s/%s' % (pid, w), 'rb').read()\n"
        "                   for w in ('cmdline', 'environ'))\n"
        "    except OSError:\n"
        "        return False\n"
        "print('shown by', [p for p in seen if shows(p)], 'of', len(seen))\n")
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec(str(prog))])
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if "shown by" in l]
    assert len(lines) == 2 and all("shown by [] of" in l for l in lines), p.stdout


def test_sigterm_stops_the_job(slurm):
    env = slurm.environ()
    env["DSM_TEST_TAG"] = uuid.uuid4().hex
    proc = subprocess.Popen(["salloc", "-n", "2", *dsmexec(HELPER, "--sleep", "30")], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_lines(proc, 2, "sleeping")
        inside = [p for p in pids_with(DSMEXEC) if p != proc.pid and
                  open("/proc/%d/cmdline" % p, "rb").read().startswith(sys.executable.encode())]
        assert len(inside) == 1, inside
        os.kill(inside[0], signal.SIGTERM)
        _, err = proc.communicate()
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    assert b"dsmexec: got SIGTERM, stopping the job" in err
    assert not wait_gone("DSM_TEST_TAG=" + env["DSM_TEST_TAG"], where="environ")


def test_launcher_slurm_outside_an_allocation_runs_salloc(slurm):
    p = slurm_run(slurm, dsmexec("--launcher", "slurm", "-n", "3", MATMUL, "96"))
    assert p.returncode == 0, p.stderr
    assert "[rank 0] matmul n=96 on 3 ranks: max error 0: ok" in p.stdout.splitlines(), p.stdout


def test_launcher_slurm_outside_an_allocation_needs_n():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    p = subprocess.run(dsmexec("--launcher", "slurm", MATMUL), capture_output=True, text=True,
                       env=env)
    assert p.returncode == 1
    assert "outside an allocation needs -n N" in p.stderr


def test_machine_file_under_slurm_is_refused(tmp_path):
    machines = machine_file(tmp_path, "localhost")
    p = subprocess.run(dsmexec(machines, MATMUL), capture_output=True, text=True,
                       env=dict(os.environ, SLURM_JOB_ID="1"))
    assert p.returncode == 1
    assert "give no machine file (%s), or use --launcher ssh" % machines in p.stderr


WHERE_PROG = (
    "import os, libdsm_services.rank\n"
    "c = libdsm_services.rank.CONTEXT\n"
    "print('on', os.environ['SLURMD_NODENAME'], 'said', c.hostnames[c.rank])\n")


def test_ranks_on_two_nodes(slurm_nodes, tmp_path):
    """Each node is a network namespace: the ranks reach dsmexec and each other across
    the bridge, and every rank is on the host dsmexec names for it."""
    prog = tmp_path / "where.py"
    prog.write_text(WHERE_PROG)
    p = slurm_run(slurm_nodes, ["salloc", "-N", "2", "-n", "4", *dsmexec(str(prog))])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, " said ")
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    nodes = {text.split()[1] for text in got.values()}
    assert nodes == {"h1", "h2"}, p.stdout
    assert all(text.split()[1] == text.split()[3] for text in got.values()), p.stdout


def test_matmul_on_two_nodes(slurm_nodes):
    p = slurm_run(slurm_nodes, ["salloc", "-N", "2", "-n", "4", *dsmexec(MATMUL, "128")])
    assert p.returncode == 0, p.stderr
    assert "[rank 0] matmul n=128 on 4 ranks: max error 0: ok" in p.stdout.splitlines(), p.stdout


def test_mpi_options_under_slurm(slurm, tmp_path):
    """-x, --wdir, --output-filename and stdin to rank 0 reach Slurm tasks too."""
    prog = tmp_path / "opts.py"
    prog.write_text(OPTS_PROG)
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec(
        "-x", "FOO=bar baz", "--wdir", str(tmp_path), "--output-filename", str(tmp_path / "out"),
        "opts.py")], input="to rank 0\n")
    assert p.returncode == 0, p.stderr
    assert sorted(p.stdout.splitlines()) == [
        "[rank 0] 0 bar baz %s 'to rank 0\\n'" % tmp_path, "[rank 1] 1 bar baz %s ''" % tmp_path]
    assert (tmp_path / "out" / "rank.1.stdout").read_text() == "1 bar baz %s ''\n" % tmp_path


OPTS_PROG = """\
import os, sys, libdsm_services.rank as r
print(r.CONTEXT.rank, os.environ["FOO"], os.getcwd(), repr(sys.stdin.read()))
"""


def test_missing_program_and_timeout_under_slurm(slurm, tmp_path):
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec(str(tmp_path / "nope.py"))])
    assert p.returncode == 1
    said = [line for line in p.stderr.splitlines() if line and not line.startswith("salloc:")]
    assert len(said) == 1 and said[0].endswith("nope.py: no such file in %s on %s"
                                               % (REPO, said[0].split()[-1])), p.stderr
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec("--timeout", "2", HELPER, "--sleep", "30")])
    assert p.returncode == 124, p.stderr
    assert "dsmexec: the job ran past --timeout 2 s: stopping it" in p.stderr


def test_a_hung_job_under_slurm_prints_every_ranks_stack(slurm):
    """The STACKS request reaches Slurm tasks over their dsmexec connection (issue 21)."""
    prog = os.path.join(REPO, "tests", "deadlock_prog.py")
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec("--timeout", "6", prog)])
    assert p.returncode == 124, p.stderr
    for rank, line in ((0, 10), (1, 9)):
        assert '[rank %d]   File "%s", line %d in <module>' % (rank, prog, line) \
            in p.stderr.splitlines(), p.stderr


def test_a_module_under_slurm(slurm):
    p = slurm_run(slurm, ["salloc", "-n", "2", *dsmexec("-m", "examples.matmul", "64")])
    assert p.returncode == 0, p.stderr
    assert "[rank 0] matmul n=64 on 2 ranks: max error 0: ok" in p.stdout.splitlines(), p.stdout
