"""Whom dsmexec blames when one rank of a job fails, and with what status.

Each test fails one rank with tests/failure_prog.py while the others are
inside libdsm; they find the loss themselves (a closed or reset
connection, or the heartbeat) and their cores tell dsmexec which rank they
lost.  dsmexec must name that rank, never one it took down, with the
rank's own status (137 for SIGKILL, 3 for exit(3)) or the heartbeat's
verdict (status 1, "declared dead") for a rank that cannot say anything.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from dsmrun import ROOT, rank_lines, run
from libdsm_services import blame

PROG = os.path.join(ROOT, "tests", "failure_prog.py")
HEARTBEAT_S = 2
NO_FENCE = {"DSM_HEARTBEAT_S": "0"}
"""No heartbeat, so no self-fencing 2 s after a loss: on a loaded machine a rank may
need longer to raise its PeerError and print it (a closed connection is found at once)."""
pytestmark = pytest.mark.timeout(120)


def verdicts(err):
    """dsmexec's own lines about ranks ("dsmexec: rank N ...")."""
    return re.findall(r"^dsmexec: (rank \d+ .*)$", err, re.M)


def lost(peer, how="closed"):
    return {"peer": peer, "how": how, "peer_error": "rank %d went away" % peer}


def test_blame_follows_who_lost_whom_to_a_rank_that_lost_nobody():
    e = blame.Evidence(4)
    assert e.culprit() is None
    e.lost_peer(3, lost(1))             # 3 lost 1, but 1 had lost 2 first
    e.lost_peer(1, lost(2, "silent"))
    e.lost_peer(0, {"peer_error": "no rank named"})     # no evidence against anyone
    assert e.culprit() == blame.Accusation(1, 2, "silent", "rank 2 went away")
    for bad in ({"peer": 0, "how": "closed"}, {"peer": 9, "how": "closed"},
                {"peer": 2, "how": "maybe"}, {"peer": "2", "how": "closed"}):
        e = blame.Evidence(4)
        e.lost_peer(0, bad)             # itself, no such rank, no such way, not a number
        assert e.culprit() is None, bad


def test_in_a_circle_of_losses_the_first_named_is_blamed():
    e = blame.Evidence(3)
    e.lost_peer(0, lost(1))
    e.lost_peer(1, lost(0))
    assert e.culprit().peer == 1


def test_a_rank_killed_by_sigkill_is_named_with_status_137(tmp_path):
    p = run(tmp_path, 4, PROG, "kill", "--rank", "2", env=NO_FENCE)
    assert p.returncode == 137, p.stderr
    got = verdicts(p.stderr)
    assert got and got[0].startswith("rank 2 (host localhost, line 3) was killed by signal 9 "
                                     "(SIGKILL)"), p.stderr
    assert "survived" not in p.stdout
    # the ranks that saw it go got it as a field: PeerError.peer, from dsm_failed_peer().
    # Every survivor that reported names rank 2; on a loaded machine one may still be
    # noticing when dsmexec's FAILING_GRACE ends and the teardown takes it down.
    got = rank_lines(p.stdout, "PeerError")
    assert got and set(got) <= {0, 1, 3}, p.stdout
    assert got == {r: "PeerError peer=2 rank=%d" % r for r in got}, p.stdout


def test_a_stopped_rank_is_named_by_the_heartbeat_while_the_others_fault(tmp_path):
    # The others wait inside page faults on pages rank 2 is home of: they leave
    # through dsm_panic, and their cores still name rank 2 to dsmexec.
    p = run(tmp_path, 4, PROG, "stop", "--rank", "2", env={"DSM_HEARTBEAT_S": str(HEARTBEAT_S)})
    assert p.returncode == 1, p.stderr
    got = verdicts(p.stderr)
    assert got and re.fullmatch(r"rank 2 \(host localhost, line 3\) declared dead by rank [013]: "
                                r"rank 2 sent nothing for [\d.]+ s: declared dead; killed it",
                                got[0]), p.stderr
    assert "fatal: page" in p.stderr        # the others were inside faults
    assert "survived" not in p.stdout


def test_a_connection_reset_in_an_allreduce_ends_the_job_naming_the_rank(tmp_path):
    # Rank 0's comm thread, inside a 4 KiB allreduce under core.mu, sends to
    # rank 2 just after rank 2's reset came (failure_prog.py arranges it).  It
    # must end by itself with a PeerError naming rank 2, not hang on its own
    # lock until dsmexec's teardown ends it.
    p = run(tmp_path, 3, PROG, "reset", "--rank", "2", "--dir", str(tmp_path), env=NO_FENCE)
    assert p.returncode == 3, p.stderr
    got = verdicts(p.stderr)
    assert got and got[0].startswith("rank 2 (host localhost, line 3) exited with status 3"), \
        p.stderr
    for r in (0, 1):
        assert re.search(r"^\[rank %d\] libdsm\.errors\.PeerError: rank %d on host localhost: "
                         r".*rank 2\b" % (r, r), p.stderr, re.M), p.stderr
    assert "lost the connection to dsmexec" not in p.stderr
    # rank 0's was raised in the allreduce (rank 1's may come from finalize:
    # its part of the allreduce may have been done before it saw the loss)
    assert rank_lines(p.stdout, "PeerError").get(0) == "PeerError peer=2 rank=0", p.stdout


@pytest.fixture(scope="module")
def lockcheck_tree(tmp_path_factory):
    """A copy of the package whose core is built with -DDSM_LOCKCHECK: every lock
    taken out of ground.h's order aborts the rank."""
    tree = tmp_path_factory.mktemp("lockcheck")
    skip = shutil.ignore_patterns("*.so", "*.o", "_core.c", "__pycache__")
    for d, name in (("libdsm", "libdsm"), ("services", "libdsm_services")):
        shutil.copytree(os.path.join(ROOT, d), tree / name, ignore=skip)
    shutil.copy(os.path.join(ROOT, "dsmexec.py"), tree / "dsmexec.py")
    shutil.copytree(os.path.join(ROOT, "tests"), tree / "tests",
                    ignore=shutil.ignore_patterns("*.pyc", "__pycache__", "sim"))
    subprocess.run([sys.executable, os.path.join("libdsm", "_build.py")], cwd=tree, check=True,
                   capture_output=True, env=dict(os.environ, DSM_LOCKCHECK="1"))
    core = [f for f in os.listdir(tree / "libdsm") if f.startswith("_core") and f.endswith(".so")]
    assert b"lock order" in (tree / "libdsm" / core[0]).read_bytes()     # the check is in
    return tree


@pytest.mark.timeout(400)
def test_the_reset_in_an_allreduce_keeps_the_lock_order(tmp_path, lockcheck_tree):
    # The failing send runs under core.mu on the comm thread: recording and
    # reporting the loss there must take no lock out of order.
    p = run(tmp_path, 3, str(lockcheck_tree / "tests" / "failure_prog.py"), "reset", "--rank", "2",
            "--dir", str(tmp_path), env=NO_FENCE, cwd=str(lockcheck_tree),
            dsmexec=str(lockcheck_tree / "dsmexec.py"))
    assert p.returncode == 3, p.stderr
    assert "libdsm: lock order" not in p.stderr, p.stderr
    for r in (0, 1):
        assert re.search(r"^\[rank %d\] libdsm\.errors\.PeerError: .*rank 2\b" % r, p.stderr,
                         re.M), p.stderr
