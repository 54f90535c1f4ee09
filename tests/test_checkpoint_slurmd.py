"""dsmexec --restarts under the private Slurm when a whole node dies: its
slurmd is killed, and with it the job's processes there (slurmstepd, the
task), as a node that lost power would lose them.  slurmctld marks the node
down once it misses SlurmdTimeout (6 s here, not the default 300 s), the
allocation (salloc --no-kill) keeps its other node, and dsmexec restarts
the job there from the last checkpoint: the fault-free grid, bit for bit."""
import contextlib
import os
import signal
import subprocess
import time
import uuid

import numpy as np
import pytest

import netns
import slurmd
from conftest import _enter, _unavailable, wait_gone
from test_checkpoint import _jacobi, _run_killing
from test_checkpoint_hosts import last_hosts

SLURMD_TIMEOUT_S = 6


@pytest.fixture
def dying_nodes(tmp_path_factory):
    """Two nodes, h1 and h2 (network namespaces), of a private Slurm of their own
    (a node of it is killed) that notices a dead slurmd within SLURMD_TIMEOUT_S."""
    why = slurmd.missing() or netns.missing()
    if why:
        _unavailable(why)
    with contextlib.ExitStack() as stack:
        cluster = _enter(stack, netns.virtual_hosts(2, tmp_path_factory.mktemp("dying")))
        slurm = _enter(stack, slurmd.private_slurm(
            cpus=4, hosts=cluster, settings=["SlurmdTimeout=%d" % SLURMD_TIMEOUT_S]))
        yield slurm, cluster


def kill_node(slurm, host, node):
    """What a node's death does to its processes: its slurmd (by the pid it
    wrote), then everything else in its namespace but its sshd (the test's
    harness, not Slurm's), SIGKILLed."""
    with open(os.path.join(slurm.directory, "slurmd-%s.pid" % node)) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    for pid in netns.namespace_pids(host.name):
        if pid != host.sshd.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def declared_down(slurm, node, timeout):
    """Wait until slurmctld says node is down (it pings every SlurmdTimeout / 3);
    False if timeout (seconds) ran out first."""
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True,
                           text=True, env=slurm.environ(), timeout=30)
        if p.stdout.strip().startswith("down"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_node_whose_slurmd_dies_is_left_out_of_the_restart(tmp_path, dying_nodes):
    """h1 runs ranks 0 and 1, h2 rank 2; h2 dies while the job waits at sweep
    12 (after the checkpoint of sweep 10): the restart runs all three on h1."""
    slurm, cluster = dying_nodes
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    env = slurm.environ()
    env["DSM_TEST_TAG"] = uuid.uuid4().hex
    status, output = _run_killing(
        tmp_path, [], None, out, "[rank 0] paused at sweep 12", None,
        before_kill=lambda: kill_node(slurm, cluster.hosts[1], "h2"),
        args=["--pause-at", "12"], env=env,
        prefix=["salloc", "--no-kill", "-N", "2", "-n", "3"])
    assert status == 0, output
    assert "restarting it from checkpoint generation 2" in output, output
    assert "leaving node h2 out of the restart" in output, output
    assert last_hosts(output) == {0: "h1", 1: "h1", 2: "h1"}, output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    # Slurm saw the node die too (the restart did not wait for that), and the
    # allocation, completing on h2 until then, ends
    assert declared_down(slurm, "h2", 10 * SLURMD_TIMEOUT_S)
    assert not wait_gone("DSM_TEST_TAG=" + env["DSM_TEST_TAG"], timeout=10, where="environ")
    assert slurmd.queue_drains(slurm), "jobs left in the queue"
