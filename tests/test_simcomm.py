"""The comm thread's decisions on a simulated clock (build/simcomm): the
leader/follower loop of DSM_WAIT=reply, heartbeats, silence verdicts,
blame and self-fencing, with silent, dead, reset and slow peers."""
import os
import re
import shutil
import subprocess

import pytest

from dsmrun import ROOT

CSRC = os.path.join(ROOT, "libdsm", "csrc")
SIMCOMM = os.path.join(ROOT, "build", "simcomm")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def simcomm():
    subprocess.run(["make", "-s", "build/simcomm"], cwd=ROOT, check=True)
    return SIMCOMM


def test_ten_thousand_seeds_keep_every_rule(simcomm):
    p = subprocess.run([simcomm, "--seeds", "0:10000"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("passed 10000 seeds"), p.stdout[-3000:]
    # every path ran: silent peers declared dead, stuck ranks fenced, the
    # peers handed back by the last polling thread, replies received by
    # the thread that waited for them
    for what in ("silence verdicts", "fences", "hand-backs", "replies taken by a polling thread"):
        assert int(re.search(r"(\d+) %s" % what, p.stdout).group(1)) > 100, what


@pytest.mark.parametrize("seed", [
    "2432",     # a round woken by a heartbeat judged before reading it: a live peer dead
    "23443",    # a round after a wait that left the peers to a polling thread judged
                # without reading them: a live peer dead
    "17",       # a peer heard after the duty read its clock (its own receive, or a
                # polling thread): now - last_rx wrapped, and a live peer was dead
                # (seen on real ranks: "sent nothing for 18446744073.7 s")
])
def test_seeds_that_found_bugs_stay_fixed(simcomm, seed):
    p = subprocess.run([simcomm, "--seed", seed], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.endswith("seed %s passed\n" % seed), p.stdout[-3000:]


def test_a_seed_replays_exactly(simcomm):
    runs = [subprocess.run([simcomm, "--seed", "77"], capture_output=True, text=True) for _ in range(2)]
    assert runs[0].returncode == 0 and runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.count("sends a heartbeat") > 5


# A bug planted in a copy of the shipped code, and the rule that catches it.
PLANTS = {
    "the last poller leaves without handing the peers back": (
        "commstep.c", "return !__atomic_sub_fetch(&l->pollers, 1, __ATOMIC_SEQ_CST);",
        "__atomic_sub_fetch(&l->pollers, 1, __ATOMIC_SEQ_CST);\n    return 0;",
        "nobody leads the loop"),
    "a failure recorded without waking the waiters": (
        "ground.c", "    }\n    core_wake(c);\n}", "    }\n}",
        "sleeps though the job failed (lost wake-up)"),
    "the fence deadline moved on every round": (
        "commstep.c", "    if (!lv->fence_ns)\n        lv->fence_ns", "    lv->fence_ns",
        "still runs (no fence)"),
    "heartbeats every heartbeat_ns / 2": (
        "commstep.c", "lv->heartbeat_ns / 4;\n}", "lv->heartbeat_ns / 2;\n}",
        "dead (heartbeats were flowing)"),
}


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_bug_is_caught(tmp_path, plant):
    name, old, new, rule = PLANTS[plant]
    for f in ("ground.c", "commstep.c"):
        shutil.copy(os.path.join(CSRC, f), tmp_path / f)
    text = (tmp_path / name).read_text()
    assert text.count(old) == 1, old
    (tmp_path / name).write_text(text.replace(old, new))
    binary = str(tmp_path / "simcomm")
    subprocess.run(["cc", "-O2", "-DDSM_LOCKCHECK", "-I" + CSRC, "-o", binary,
                    os.path.join(ROOT, "tests", "sim", "simcomm.c"),
                    os.path.join(ROOT, "tests", "sim", "simcommrun.c"),
                    str(tmp_path / "ground.c"), str(tmp_path / "commstep.c"), "-pthread"],
                   check=True)
    p = subprocess.run([binary, "--seeds", "0:10000"], capture_output=True, text=True)
    assert p.returncode == 1 and rule in p.stdout, p.stdout[-2000:]
    seed = re.search(r"replay: build/simcomm --seed (\d+)", p.stdout).group(1)
    again = subprocess.run([binary, "--seed", seed], capture_output=True, text=True)
    assert again.returncode == 1 and rule in again.stdout.splitlines()[-1]
