"""The checkpoint protocol's steps, run as shipped code (libdsm/checkpoint.py's
Checkpoints and the real Store) over the fakes of tests/sim/ckptfakes.py, by
tests/sim/ckptsim.py: a rank dropped before each step of a checkpoint and of
a restore in turn, two hosts lost in a row with no checkpoint between them,
then the seeded simulation (`make sim` runs more seeds), and three planted
bugs it catches.

Checked at every step (ckptsim.World.check): no generation is half visible
(one that a host shows has every part and state whole in some store), and
once a checkpoint returned, a generation at least as new stays shown; after
each restore, that it took the newest such generation, bit for bit, and
in buddy memory that it left that generation alone shown and held twice
(ckptsim.World.held_twice).
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim"))

import ckptsim                                  # noqa: E402  (tests/sim)
from libdsm import checkpoint as ckpt          # noqa: E402
from libdsm.ckptstore import Store             # noqa: E402

HOSTS = ["h0", "h1", "h2"]


def world(buddy):
    return ckptsim.World(0, hosts=HOSTS, buddy=buddy)


def steps(buddy, *runs):
    """Each rank's steps in the last of runs (run_job's arguments after the World)."""
    w = world(buddy)
    try:
        for run in runs:
            ckptsim.run_job(w, *run)
        return w.steps
    finally:
        w.remove()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("buddy", [True, False], ids=["buddy", "directory"])
def test_a_rank_dropped_before_any_step_of_a_checkpoint(buddy):
    """The third checkpoint, a rank dropped before each of its steps (in buddy
    memory its host's memory lost with it): the restart finds the third
    generation if it was complete, else the second."""
    counts = [b - a for a, b in zip(steps(buddy, (False, None, 2)),
                                    steps(buddy, (False, None, 3)))]
    assert min(counts) >= 8, counts                 # barriers, gathers, writes, pins
    seen = set()
    for victim in range(len(HOSTS)):
        for at in range(counts[victim] + 1):
            w = world(buddy)
            try:
                dropped = ckptsim.run_job(w, False, ("checkpoint", 2, victim, at), 3, lose=True)
                assert dropped == (victim if at < counts[victim] else None), (victim, at)
                ckptsim.run_job(w, True, None, 0)
                seen.add(w.restored)
            finally:
                w.remove()
    assert seen == {2, 3}               # drops before and after the manifest both came


@pytest.mark.timeout(300)
@pytest.mark.parametrize("buddy", [True, False], ids=["buddy", "directory"])
def test_a_rank_dropped_before_any_step_of_a_restore(buddy):
    counts = steps(buddy, (False, None, 2), (True, None, 0))
    assert min(counts) >= 5, counts
    for victim in range(len(HOSTS)):
        for at in range(counts[victim]):
            w = world(buddy)
            try:
                ckptsim.run_job(w, False, None, 2)
                assert ckptsim.run_job(w, True, ("restore", 0, victim, at), 0,
                                       lose=True) == victim
                ckptsim.run_job(w, True, None, 1)
                assert w.restored == 2
                ckptsim.run_job(w, True, None, 0)
                assert w.restored == 3
            finally:
                w.remove()


@pytest.mark.timeout(300)
def test_two_hosts_lost_in_a_row_with_no_checkpoint_between():
    """A host lost with its memory as the third checkpoint begins, then,
    after the restart restored the second generation, another host lost as
    the next checkpoint begins: the restore had held that generation twice
    again, so the second restart finds it still, whole."""
    for first in range(len(HOSTS)):
        for second in range(len(HOSTS)):
            w = world(True)
            try:
                ckptsim.run_job(w, False, ("checkpoint", 2, first, 0), 3, lose=True)
                ckptsim.run_job(w, True, ("checkpoint", 0, second, 0), 1, lose=True)
                assert (w.losses, w.restored) == (2, 2), (first, second)
                ckptsim.run_job(w, True, None, 0)
                assert w.restored == 2, (first, second)
            finally:
                w.remove()


@pytest.mark.timeout(300)
def test_the_seeded_simulation_holds():
    for seed in range(60):
        ckptsim.run_seed(seed)


def caught(seeds=range(100)):
    """The first seed the simulation fails, or None."""
    for seed in seeds:
        try:
            ckptsim.run_seed(seed)
        except ckptsim.Violation as e:
            return seed, str(e)
    return None


@pytest.mark.timeout(300)
def test_the_simulation_catches_a_retire_of_the_generation_in_use(monkeypatch):
    """The code before this check: a checkpoint retired every generation but the
    newest begun, which after a restart past an unfinished one is not the one
    restored: then no generation is complete until the checkpoint ends."""
    retire = Store.retire
    monkeypatch.setattr(Store, "retire", lambda self, keep: retire(self, self.highest()))
    seed, what = caught()
    assert "was complete, and no generation as new is shown" in what, (seed, what)


@pytest.mark.timeout(300)
def test_the_simulation_catches_missing_buddy_copies(monkeypatch):
    monkeypatch.setattr(ckpt.Checkpoints, "_keep_copies", lambda self, store, gen, every: None)
    seed, what = caught()
    assert "is shown, but part-" in what and "is in no store whole" in what, (seed, what)


@pytest.mark.timeout(300)
def test_the_simulation_catches_a_restore_that_does_not_copy_again(monkeypatch):
    """The code before this check: a restore from a lost host's buddy copies
    left its parts held once, until the next checkpoint completed."""
    monkeypatch.setattr(ckpt.Checkpoints, "_copy_again",
                        lambda self, store, gen, doc, blobs: None)
    seed, what = caught()
    assert "after the restore of generation" in what and " only, of the hosts " in what, \
        (seed, what)
