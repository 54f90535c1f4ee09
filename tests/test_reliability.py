"""Failure detection under real ranks: heartbeats from the comm threads
declare a silent rank dead, and a rank busy in a GIL-holding call is not."""
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest

from conftest import DSMEXEC, machine_file, wait_for_lines, wait_gone
from dsmrun import DSM_PROG, ROOT, run

pytestmark = pytest.mark.timeout(60)
HEARTBEAT_S = 2


def stop_one_rank(tmp_path, scenario, stop_rank=1):
    """Run scenario on 2 local ranks, SIGSTOP stop_rank once both printed
    their pids (wherever they are then: the heartbeat finds it all the
    same); (returncode, stderr).  Nothing is left stopped or running
    afterwards.  Only the heartbeat ends the job: the test's timeout bounds it."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, DSM_HEARTBEAT_S=str(HEARTBEAT_S), DSM_TEST_TAG=tag)
    machines = machine_file(tmp_path, "localhost", "localhost")
    p = subprocess.Popen([sys.executable, DSMEXEC, machines, DSM_PROG, scenario,
                          "--busy", "45"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=ROOT, env=env)
    pids = {}
    try:
        seen = wait_for_lines(p, 2, "pid=")
        pids = {int(r): int(pid) for r, pid in re.findall(rb"\[rank (\d+)\] pid=(\d+)", seen)}
        os.kill(pids[stop_rank], signal.SIGSTOP)
        _, err = p.communicate()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for pid in pids.values():               # whatever happened, nothing stays stopped
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    assert not wait_gone(tag, where="environ")
    return p.returncode, err.decode(errors="replace")


def test_a_stopped_rank_is_declared_dead(tmp_path):
    # The heartbeat's verdict: the stopped rank is named (not rank 0, which
    # reported it), killed, and the job's status is 1.
    rc, err = stop_one_rank(tmp_path, "barrier_loop")
    assert rc == 1, err
    assert re.search(r"^dsmexec: rank 1 \(host localhost, line 2\) declared dead by rank 0: "
                     r"rank 1 sent nothing for [\d.]+ s: declared dead; killed it$", err, re.M), err


def test_a_rank_stuck_in_c_ends_itself_after_a_peer_died(tmp_path):
    # rank 0's Python cannot see the PeerError: its comm thread ends it
    rc, err = stop_one_rank(tmp_path, "stuck")
    assert rc == 1, err
    assert re.search(r"\[rank 0\] libdsm: rank 0: fatal: rank 1 sent nothing for [\d.]+ s: "
                     r"declared dead; the program did not end within 2 s of it, exiting", err), err
    assert "came back" not in err


def test_busy_owner_in_a_long_gil_holding_call_is_alive(tmp_path):
    # rank 0 sits in one C call that keeps the GIL for 3 heartbeats
    p = run(tmp_path, 2, DSM_PROG, "busy_owner", "--busy", "0.5",
            "--gil-hold", str(3 * HEARTBEAT_S), env={"DSM_HEARTBEAT_S": str(HEARTBEAT_S)})
    assert p.returncode == 0, p.stderr
    assert "busy_owner value=4242" in p.stdout and "busy done" in p.stdout


def test_heartbeat_configuration():
    from libdsm import config
    from libdsm.errors import ConfigError
    assert config.resolve(4096, environ={})["heartbeat_s"] == 10
    assert config.resolve(4096, environ={"DSM_HEARTBEAT_S": "0"})["heartbeat_s"] == 0
    assert config.resolve(4096, environ={"DSM_HEARTBEAT_S": "0"}, heartbeat_s=3)["heartbeat_s"] == 3
    for bad in ("-1", "0.01", "soon"):
        with pytest.raises(ConfigError, match="DSM_HEARTBEAT_S"):
            config.resolve(4096, environ={"DSM_HEARTBEAT_S": bad})
