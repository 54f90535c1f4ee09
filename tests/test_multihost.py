"""Jobs over several hosts: network namespaces, each with its own network stack and sshd.

dsmexec runs in this namespace and reaches the hosts over ssh; the ranks
connect back to it across the bridge, and to each other host to host.  The
`hosts` fixture checks afterwards that no rank and no ssh session is left
on any host.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import DSMEXEC, HELPER, machine_file
from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(60)


def new_logins(cluster, before):
    return {a: n - before[a] for a, n in cluster.logins().items()}


@pytest.mark.parametrize("name,args", [("matmul.py", ["128"]), ("sor.py", ["96", "30"])])
def test_example_on_three_hosts(tmp_path, hosts, name, args):
    before = hosts.logins()
    p = run(tmp_path, 3, os.path.join(ROOT, "examples", name), *args,
            opts=hosts.ssh_options(), hosts=hosts.addresses)
    assert p.returncode == 0, p.stderr
    assert "WRONG" not in p.stdout
    assert len([l for l in p.stdout.splitlines() if l.endswith("ok")]) == 1, p.stdout
    assert new_logins(hosts, before) == {a: 1 for a in hosts.addresses}


def test_four_ranks_on_two_hosts_share_a_connection(tmp_path, hosts):
    h1, h2, h3 = hosts.addresses
    before = hosts.logins()
    p = run(tmp_path, 4, os.path.join(ROOT, "examples", "double_touch.py"),
            opts=hosts.ssh_options(), hosts=[h1, h1, h2, h2])
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "integer value")
    assert sorted(got) == [0, 1, 2, 3], p.stdout
    assert all(t.endswith("integer value: 10") for t in got.values()), p.stdout
    # One login per host: the two ranks on each went through one connection.
    assert new_logins(hosts, before) == {h1: 1, h2: 1, h3: 0}


def test_failing_rank_on_another_host(tmp_path, hosts):
    p = run(tmp_path, 3, HELPER, "--fail", "2:3",
            opts=hosts.ssh_options(), hosts=hosts.addresses)
    assert p.returncode == 3, p.stderr
    assert "rank 2 (host %s, line 3) exited with status 3" % hosts.addresses[2] in p.stderr


HEARTBEAT_S = 2


def test_a_link_taken_down_is_found_and_named_and_leaves_nothing(tmp_path, hosts):
    """ip link set down on rank 1's host: TCP neither resets nor closes, so
    only the heartbeats find it.  dsmexec must name the cut-off rank and its
    host (not rank 0, the lowest of those that reported it) with the
    heartbeat's verdict, and nothing may be left running on the cut-off host
    either: its rank ends itself."""
    cut = hosts.hosts[1]
    machines = machine_file(tmp_path, *hosts.addresses)
    env = dict(os.environ, DSM_HEARTBEAT_S=str(HEARTBEAT_S))
    job = subprocess.Popen([sys.executable, DSMEXEC, *hosts.ssh_options(), machines,
                            os.path.join(ROOT, "tests", "failure_prog.py"), "wait", "--rank", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env=env)
    try:
        started = 0
        while started < 3:                   # every rank is past init, in its barrier loop
            line = job.stdout.readline()
            assert line, "the job ended before the link went down: %s" % job.stderr.read()
            started += "ready" in line
        subprocess.run(["ip", "link", "set", cut.veth, "down"], check=True)
        _, err = job.communicate()      # only the heartbeats can end it
    finally:
        subprocess.run(["ip", "link", "set", cut.veth, "up"], check=False)
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 1, err
    verdict = re.findall(r"^dsmexec: rank \d+ .*$", err, re.M)
    assert verdict and re.fullmatch(
        r"dsmexec: rank 1 \(host %s, line 2\) declared dead by rank [02]: rank 1 sent nothing "
        r"for [\d.]+ s: declared dead; killed it" % re.escape(cut.address), verdict[0]), err
