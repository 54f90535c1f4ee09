"""dsmexec --restarts over several hosts (network namespaces, tests/netns.py):
a host whose link goes down is left out of the restart, its ranks go to
the hosts that still answer, and its part comes back from its buddy's
memory on another host.  Under the private Slurm, a restart is a new srun
step in the same allocation."""
import subprocess
import uuid

import numpy as np
import pytest

import slurmd
from conftest import wait_gone
from test_checkpoint import _jacobi, _run_killing, fresh_job, shm_stores

HEARTBEAT_S = 2


@pytest.mark.timeout(240)
def test_a_link_taken_down_restarts_on_the_hosts_that_answer(tmp_path, hosts):
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    cut = hosts.hosts[2]
    job, env = fresh_job()

    def cut_link():
        subprocess.run(["ip", "link", "set", cut.veth, "down"], check=True)

    try:
        status, output = _run_killing(
            tmp_path, [*hosts.ssh_options(), "--connect-timeout", "3"], hosts.addresses, out,
            "[rank 0] paused at sweep 12", None, before_kill=cut_link,
            args=["--pause-at", "12"], env={"DSM_HEARTBEAT_S": str(HEARTBEAT_S), **env})
    finally:
        subprocess.run(["ip", "link", "set", cut.veth, "up"], check=False)
    assert status == 0, output
    assert "host %s does not answer: rank 2 goes to %s" % (cut.address, hosts.addresses[0]) \
        in output, output
    assert "restarting it from checkpoint generation 2" in output, output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert shm_stores(job) == set()


@pytest.mark.timeout(240)
def test_a_killed_task_restarts_in_the_same_slurm_allocation(tmp_path, slurm):
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    env = slurm.environ()
    env["DSM_TEST_TAG"] = uuid.uuid4().hex
    status, output = _run_killing(tmp_path, [], None, out, "[rank 0] paused at sweep 12", 1,
                                  args=["--pause-at", "12"], env=env,
                                  prefix=["salloc", "-n", "3"])
    assert status == 0, output
    assert "the job failed (rank " in output and "Slurm task" in output, output
    assert "restarting it from checkpoint generation 2" in output, output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert not wait_gone("DSM_TEST_TAG=" + env["DSM_TEST_TAG"], timeout=10, where="environ")
    assert slurmd.queue_drains(slurm), "jobs left in the queue"
