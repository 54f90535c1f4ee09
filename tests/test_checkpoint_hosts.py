"""dsmexec --restarts over several hosts (network namespaces, tests/netns.py):
a host whose link goes down is left out of the restart, its ranks go to
the hosts that still answer, and its part comes back from its buddy's
memory on another host."""
import subprocess

import numpy as np
import pytest

from test_checkpoint import _jacobi, _run_killing, shm_stores

HEARTBEAT_S = 2


@pytest.mark.timeout(240)
def test_a_link_taken_down_restarts_on_the_hosts_that_answer(tmp_path, hosts):
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    cut = hosts.hosts[2]
    before = shm_stores()

    def cut_link():
        subprocess.run(["ip", "link", "set", cut.veth, "down"], check=True)

    try:
        status, output = _run_killing(
            tmp_path, [*hosts.ssh_options(), "--connect-timeout", "3"], hosts.addresses, out,
            "[rank 0] paused at sweep 12", None, before_kill=cut_link,
            args=["--pause-at", "12"], env={"DSM_HEARTBEAT_S": str(HEARTBEAT_S)})
    finally:
        subprocess.run(["ip", "link", "set", cut.veth, "up"], check=False)
    assert status == 0, output
    assert "host %s does not answer: rank 2 goes to %s" % (cut.address, hosts.addresses[0]) \
        in output, output
    assert "restarting it from checkpoint generation 2" in output, output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert shm_stores() == before
