"""Locks as threading.Lock, Condition, Event and Semaphore across ranks,
and barrier(timeout=), on real ranks under dsmexec (the Conditions also
in host-shared mode on one host, where the mailboxes are in the host's
memory: hostmbox.c); and what they add to the protocol (lock tries,
abandoned requests, mailboxes) in the simulator."""
import os
import re
import subprocess

import pytest

from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(120)
PROG = os.path.join(ROOT, "tests", "sync_prog.py")


def lines(p, needle, n):
    """{rank: line} of the ranks that printed needle; the job passed."""
    assert p.returncode == 0, p.stdout + p.stderr
    return rank_lines(p.stdout, needle)


@pytest.mark.parametrize("n,mode", [(2, "sequential"), (3, "sequential"), (3, "release")])
def test_locks_try_timeout_locked_and_names(tmp_path, n, mode):
    """In release mode a timed acquire that gives up still hands the write
    notices on: the count stays exact."""
    p = run(tmp_path, n, PROG, "locks", env={"DSM_CONSISTENCY": mode})
    named = lines(p, "named lock", n)
    assert len(named) == n and len(set(named.values())) == 1, p.stdout
    assert lines(p, "while held", n) == {1: "while held: try=False timed=False locked=True"}
    assert lines(p, "holder", n) == {0: "holder: locked=True again=False"}
    reacquire = lines(p, "reacquire", n)[0]
    assert "LockError" in reacquire and "already held by this thread" in reacquire, reacquire
    assert lines(p, "when free", n) == {1: "when free: try=True"}
    assert lines(p, "released", n) == {1: "released: locked=False"}
    assert set(lines(p, "bad args", n).values()) == {
        "bad args: ValueError: can't specify a timeout for a non-blocking call"}
    assert set(lines(p, "counter", n).values()) == {"counter %d of %d" % (100 * n, 100 * n)}


# share=host: the job on one host, its wake-ups through the host's
# mailboxes in shared memory (hostmbox.c), its locks through its futexes
SHARES = [{"DSM_SHARE": "rank"}, {"DSM_SHARE": "host"}]


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
@pytest.mark.parametrize("n", [2, 4])
def test_condition_wakes_every_waiting_thread_of_every_rank(tmp_path, n, env):
    p = run(tmp_path, n, PROG, "condition", env=env)
    assert lines(p, "timeout:", n) == {0: "timeout: False"}
    assert "cannot notify on an un-acquired lock" in lines(p, "not held", n)[0]
    assert lines(p, "woke", n) == {r: "woke [True, True]" for r in range(1, n)}


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
@pytest.mark.parametrize("n", [2, 3])
def test_event_and_semaphore(tmp_path, n, env):
    p = run(tmp_path, n, PROG, "event", env=env)
    assert lines(p, "before", n) == {r: "before: set=False wait=False" for r in range(n)}
    assert lines(p, "waited", n) == {r: "waited: True" for r in range(n)}
    p = run(tmp_path, n, PROG, "semaphore", env=env)
    assert set(lines(p, "counter", n).values()) == {"counter %d of %d" % (50 * n, 50 * n)}
    assert lines(p, "two:", n) == {0: "two: [True, True, False]"}


# and 2 virtual hosts of 2 ranks sharing their host's memory, where the
# barrier has two levels (the late rank 3 is not its host's leader)
@pytest.mark.parametrize("n,env", [(2, {}), (3, {}), (4, {"DSM_SHARE": "host", "DSM_VHOSTS": "2"})])
def test_barrier_timeout_names_the_barrier_and_can_be_finished(tmp_path, n, env):
    p = run(tmp_path, n, PROG, "barrier_timeout", env=env)
    timed_out = lines(p, "waited: ", n)
    assert sorted(timed_out) == list(range(n - 1)), p.stdout
    for r, text in timed_out.items():
        assert text.startswith("waited: BarrierTimeoutError: rank %d" % r), text
        assert "barrier() timed out after 0.5 s: " in text, text
        # the late rank is named; a rank between may be too, if it came later than 0.5 s
        late = re.search(r"timed out after 0.5 s: ranks? ([\d, ]+) ha(s|ve) not arrived "
                         r"\(barrier 1 of this rank\)", text)
        assert late and str(n - 1) in late.group(1).split(", "), text
        assert str(r) not in late.group(1).split(", "), text
    for text in lines(p, "pending", n).values():
        assert "a barrier that timed out is still pending" in text, text
    assert lines(p, "after", n) == {r: "after: sum=%d" % n for r in range(n)}


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
def test_seventy_threads_of_a_rank_woken_at_once_all_wake(tmp_path, env):
    p = run(tmp_path, 2, PROG, "crowd", env=env)
    assert lines(p, "crowd woke", 2) == {1: "crowd woke 70 of 70: {True}"}, p.stdout


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
def test_a_post_to_a_full_host_mailbox_waits_for_a_take(tmp_path, env):
    """Per rank a mailbox has no bound; a host mailbox holds 62 keys."""
    p = run(tmp_path, 2, PROG, "fullbox", env=env)
    got = lines(p, "fullbox", 2)
    if env["DSM_SHARE"] == "host":
        assert got == {1: "fullbox early=False taken=63"}, p.stdout
    else:
        assert got in ({1: "fullbox early=False taken=63"}, {1: "fullbox early=True taken=63"})


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
def test_wait_notify_rounds_on_one_shared_host_send_no_message(tmp_path, env):
    """200 turns each of 2 ranks through a Condition (of 3 ranks: the third
    only meets them in the barriers): each turn but a rank's first ends a
    wait.  Per rank, the lock and the wake-ups are messages; on one host in
    host-shared mode, none is."""
    p = run(tmp_path, 3, PROG, "pingpong", "200", env=env)
    got = lines(p, "turns", 3)
    assert sorted(got) == [0, 1], p.stdout
    for text in got.values():
        turns, woken, sent = map(int, re.fullmatch(r"turns (\d+) woken (\d+) msgs sent (\d+)",
                                                   text).groups())
        assert turns == 400 and woken in (199, 200), text
        assert (sent == 0) if env["DSM_SHARE"] == "host" else (sent > 400), text


@pytest.mark.parametrize("env", SHARES, ids=["rank", "host"])
@pytest.mark.parametrize("n", [2, 4])
def test_producer_consumer_example(tmp_path, n, env):
    prog = os.path.join(ROOT, "examples", "producer_consumer.py")
    with open(prog) as f:
        source = f.read()
    assert "sleep(" not in source and "import time" not in source   # Conditions only
    p = run(tmp_path, n, prog, "300", env=env)
    assert lines(p, "expected", n) == {
        0: "consumers took 300 numbers summing to 45150, expected 300 and 45150: ok"}, p.stdout
    took = lines(p, "took", n)
    assert sorted(took) == list(range(n)), p.stdout
    assert sum(int(t.split()[3]) for r, t in took.items() if r) == 300, took


def test_simulated_tries_timeouts_and_posts_keep_every_rule():
    subprocess.run(["make", "-s", "build/simsync"], cwd=ROOT, check=True)
    p = subprocess.run([os.path.join(ROOT, "build", "simsync"), "--seeds", "0:5000"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("passed"), p.stdout[-3000:]
    m = re.search(r"(\d+) tries found a lock busy, (\d+) acquires gave up", p.stdout)
    assert int(m.group(1)) > 1000 and int(m.group(2)) > 1000, p.stdout     # both paths ran
