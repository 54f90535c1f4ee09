"""Run a program under dsmexec for the runtime tests, and prove nothing of
the job is left afterwards."""
import os
import subprocess
import sys
import uuid

from conftest import REPO as ROOT, kill_all, machine_file, pids_with, run_dsmexec, wait_gone

DSM_PROG = os.path.join(ROOT, "tests", "dsm_prog.py")
COLL_PROG = os.path.join(ROOT, "tests", "coll_prog.py")


def run(tmp_path, n, prog, *args, env=None, opts=(), timeout=None, host="localhost", hosts=None,
        dsmexec=None, cwd=ROOT):
    """dsmexec with n ranks on host (or one rank per line of `hosts`); returns
    the CompletedProcess (text).  A process of the job that outlives it waits
    for the test's timeout, then is killed; so does a job that never ends,
    unless `timeout` (seconds) is given.  `dsmexec` and `cwd` run another copy
    of the package (a core built differently)."""
    tag = "DSM_TEST_TAG=%s" % uuid.uuid4().hex
    full_env = dict(os.environ, **(env or {}))
    full_env["DSM_TEST_TAG"] = tag.split("=", 1)[1]
    machines = machine_file(tmp_path, *(hosts or [host] * n), name="machines-%d" % n)
    if dsmexec is None:
        proc = run_dsmexec(*opts, machines, prog, *args, timeout=timeout, env=full_env, cwd=cwd)
    else:
        proc = subprocess.run([sys.executable, dsmexec, *opts, machines, prog, *args],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=full_env)
    try:
        wait_gone(tag, where="environ")
    finally:
        kill_all(pids_with(tag, "environ"))
    return proc


def rank_lines(out, needle):
    """{rank: text after the prefix} of the lines holding needle."""
    got = {}
    for line in out.splitlines():
        if needle in line and line.startswith("[rank "):
            prefix, _, text = line.partition("] ")
            got[int(prefix[len("[rank "):])] = text
    return got


def line_of(prog, text):
    """The number of the line of prog that holds text (errors name it)."""
    with open(prog) as f:
        return next(i for i, line in enumerate(f, 1) if text in line)


def run_code(code):
    """Run Python source in a fresh interpreter, one rank without dsmexec;
    returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
