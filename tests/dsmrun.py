"""Run a program under dsmexec for the runtime tests, and prove nothing of
the job is left afterwards."""
import os
import time
import uuid

from conftest import REPO as ROOT, machine_file, run_dsmexec

DSM_PROG = os.path.join(ROOT, "tests", "dsm_prog.py")


def processes_tagged(tag):
    """PIDs of processes whose environment holds the tag."""
    found = []
    needle = tag.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def run(tmp_path, n, prog, *args, env=None, opts=(), timeout=100, host="localhost"):
    """dsmexec with n ranks; returns the CompletedProcess (text).  Fails the
    test if any process of the job outlives it."""
    tag = "DSM_TEST_TAG=%s" % uuid.uuid4().hex
    full_env = dict(os.environ, **(env or {}))
    full_env["DSM_TEST_TAG"] = tag.split("=", 1)[1]
    machines = machine_file(tmp_path, *[host] * n, name="machines-%d" % n)
    proc = run_dsmexec(*opts, machines, prog, *args, timeout=timeout, env=full_env)
    deadline = time.monotonic() + 5
    while processes_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = processes_tagged(tag)
    assert not left, "processes outlived the job: %s" % left
    return proc


def rank_lines(out, needle):
    """{rank: text after the prefix} of the lines holding needle."""
    got = {}
    for line in out.splitlines():
        if needle in line and line.startswith("[rank "):
            prefix, _, text = line.partition("] ")
            got[int(prefix[len("[rank "):])] = text
    return got
