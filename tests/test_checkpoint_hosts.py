"""dsmexec --restarts over several hosts (network namespaces, tests/netns.py):
a host whose link goes down (at sweep 12, or in seeded trials at a random
moment, during a checkpoint too) is left out of the restart, its ranks go
to a spare host or to the hosts that still answer, and its part comes back
from its buddy's memory on another host; the grid is the fault-free one.  Under the private Slurm, a restart is
a new srun step in the same allocation, without the node that failed."""
import random
import subprocess
import uuid

import numpy as np
import pytest

import slurmd
from conftest import wait_gone
from test_checkpoint import _jacobi, _random_kill, _run_killing, fresh_job, shm_stores

HEARTBEAT_S = 2
CONNECT_S = 8
"""dsmexec's --connect-timeout: an sshd in a namespace of a loaded 2-core
machine can take more than 3 s to run `true`, and a restart then finds
every host silent."""


def last_hosts(output):
    """{rank: the host it ran on last} from jacobi_ckpt.py --progress's "on HOST" lines."""
    got = {}
    for line in output.splitlines():
        if line.startswith("[rank ") and "] on " in line:
            got[int(line[6:line.index("]")])] = line.rsplit(" ", 1)[1]
    return got


def _cut_and_restart(tmp_path, hosts, lines, cut, dash_h=False,
                     trigger="[rank 0] paused at sweep 12", pause_at=12):
    """Jacobi on the machine file `lines` (with dash_h: on -H of them) under
    --restarts; host `cut`'s link taken down when the trigger line comes (by
    default while the job waits at sweep pause_at).  One failure, one restart,
    the fault-free grid.  The output."""
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    job, env = fresh_job()

    def cut_link():
        subprocess.run(["ip", "link", "set", cut.veth, "down"], check=True)

    try:
        where = ["-H", ",".join(lines)] if dash_h else []
        status, output = _run_killing(
            tmp_path, [*hosts.ssh_options(), "--connect-timeout", str(CONNECT_S), *where],
            None if dash_h else lines, out, trigger, None, before_kill=cut_link,
            args=["--pause-at", str(pause_at)],
            env={"DSM_HEARTBEAT_S": str(HEARTBEAT_S), **env})
    finally:
        subprocess.run(["ip", "link", "set", cut.veth, "up"], check=False)
    assert status == 0, output
    assert output.count("dsmexec: the job failed (") == 1, output
    assert "host %s does not answer" % cut.address in output, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert shm_stores(job) == set()
    return output


def _cut_at_sweep_12(tmp_path, hosts, lines, cut, dash_h=False):
    """_cut_and_restart at sweep 12: the restart goes on from sweep 10's checkpoint."""
    output = _cut_and_restart(tmp_path, hosts, lines, cut, dash_h)
    assert "restarting it from checkpoint generation 2" in output, output
    assert output.count("restarted at sweep 10") == 3, output
    return output


@pytest.mark.timeout(400)
def test_a_link_taken_down_at_a_random_moment_gives_the_fault_free_grid(tmp_path, hosts):
    """Seeded trials: a random host's link goes down when a random rank
    reports a random sweep or checkpoint; its rank goes to a host that answers."""
    rng = random.Random(20261211)      # host 1 at a checkpoint, then host 0 (rank 0's)
    for trial in range(2):
        trigger, victim = _random_kill(rng, len(hosts.hosts), 40)
        cut = hosts.hosts[victim]
        (tmp_path / str(trial)).mkdir()
        output = _cut_and_restart(tmp_path / str(trial), hosts, hosts.addresses, cut,
                                  trigger=trigger, pause_at=38)
        moved = last_hosts(output)
        assert moved[victim] != cut.address and cut.address not in moved.values(), \
            (trial, trigger, output)
        hosts.wait_clean()              # the cut host's ranks gone before the next trial


@pytest.mark.timeout(240)
def test_a_link_taken_down_restarts_on_the_hosts_that_answer(tmp_path, hosts):
    cut = hosts.hosts[2]
    output = _cut_at_sweep_12(tmp_path, hosts, hosts.addresses, cut)
    assert "host %s does not answer: rank 2 goes to %s" % (cut.address, hosts.addresses[0]) \
        in output, output
    assert last_hosts(output) == {0: hosts.addresses[0], 1: hosts.addresses[1],
                                  2: hosts.addresses[0]}, output


@pytest.mark.timeout(240)
def test_a_spare_host_takes_the_ranks_of_a_host_whose_link_went_down(tmp_path, hosts):
    a, b, spare = hosts.addresses
    output = _cut_at_sweep_12(tmp_path, hosts, [a, b, b, "%s spare" % spare], hosts.hosts[1])
    assert "host %s does not answer: rank 1 goes to %s (a spare); rank 2 goes to %s " \
        "(a spare)" % (b, spare, spare) in output, output
    assert last_hosts(output) == {0: a, 1: spare, 2: spare}, output


@pytest.mark.timeout(240)
def test_a_spare_named_by_dash_h_takes_the_ranks_of_a_host_whose_link_went_down(tmp_path,
                                                                                  hosts):
    a, b, spare = hosts.addresses
    output = _cut_at_sweep_12(tmp_path, hosts, [a, "%s:2" % b, "%s:spare" % spare],
                              hosts.hosts[1], dash_h=True)
    assert "host %s does not answer: rank 1 goes to %s (a spare); rank 2 goes to %s " \
        "(a spare)" % (b, spare, spare) in output, output
    assert last_hosts(output) == {0: a, 1: spare, 2: spare}, output


def _kill_under_slurm(tmp_path, cluster, salloc, victim, opts=()):
    """Jacobi under salloc ... dsmexec --restarts (opts: more of dsmexec's),
    rank victim SIGKILLed at sweep 12; the fault-free grid in the end.  The output."""
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    env = cluster.environ()
    env["DSM_TEST_TAG"] = uuid.uuid4().hex
    status, output = _run_killing(tmp_path, list(opts), None, out, "[rank 0] paused at sweep 12",
                                  victim,
                                  args=["--pause-at", "12"], env=env, prefix=salloc)
    assert status == 0, output
    assert "the job failed (rank " in output and "Slurm task" in output, output
    assert "restarting it from checkpoint generation 2" in output, output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert not wait_gone("DSM_TEST_TAG=" + env["DSM_TEST_TAG"], timeout=10, where="environ")
    assert slurmd.queue_drains(cluster), "jobs left in the queue"
    return output


@pytest.mark.timeout(240)
def test_a_killed_task_restarts_in_the_same_slurm_allocation(tmp_path, slurm):
    output = _kill_under_slurm(tmp_path, slurm, ["salloc", "-n", "3"], 1)
    assert "is the job's only node: the restart runs there again" in output, output


@pytest.mark.timeout(240)
def test_restarts_reach_the_dsmexec_in_an_allocation_it_asks_for(tmp_path, slurm):
    """dsmexec --launcher slurm -n 3 outside an allocation runs itself again
    under salloc: that one restarts the job."""
    output = _kill_under_slurm(tmp_path, slurm, [], 1, opts=["--launcher", "slurm", "-n", "3"])
    assert "is the job's only node: the restart runs there again" in output, output


@pytest.mark.timeout(240)
def test_a_restart_under_slurm_leaves_the_failed_node_out(tmp_path, slurm_nodes):
    """Two nodes, h1 with ranks 0 and 1, h2 with rank 2: rank 2 killed, the
    restart runs all three on h1 (the step's tasks where dsmexec puts them)."""
    output = _kill_under_slurm(tmp_path, slurm_nodes, ["salloc", "-N", "2", "-n", "3"], 2)
    assert "leaving node h2 out of the restart (rank 2 failed there): its ranks go to h1" \
        in output, output
    assert last_hosts(output) == {0: "h1", 1: "h1", 2: "h1"}, output
