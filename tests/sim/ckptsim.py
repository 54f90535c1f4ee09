"""The checkpoint protocol under a seeded simulation: the shipped
libdsm/checkpoint.py (Checkpoints) and libdsm/ckptstore.py (Store) on N
ranks, over fake collectives, a fake core and one shared memfd, with one
rank's thread running at a time and a seeded choice at every step of
which goes on (FoundationDB's simulation, in small).

    .venv/bin/python tests/sim/ckptsim.py --seeds 0:300   (make sim)
    .venv/bin/python tests/sim/ckptsim.py --seed 17 -v    one, saying what it does

Each seed picks the ranks (2 to 4) and how they sit on hosts, the store
(buddy memory or a directory), the consistency mode, which pages each
checkpoint's epoch writes, and its faults: a rank dropped at a random step
of a random checkpoint or restore (then the job restarts, its ranks all
fresh), a host's memory lost with it (again only once a restore finished
since the last loss: two losses in a row with no checkpoint between them),
the lost host's ranks moved to another host or a new one.  Checked with
every rank stopped, at every step:
- no generation is half visible: each one whose manifest some host shows
  has each of its parts and states, whole, in some host's store;
- once a checkpoint has returned anywhere, a generation at least as new
  stays visible and whole (a restart always finds one);
and after each restore: it took the newest whole visible generation, its
states and its bytes (the pages written up to its epoch, the rest zero),
or started afresh on a zero region when there was none; and in buddy
memory that the generation restored is the only one shown and each of its
parts and states is whole in the stores of two hosts of the job (one when
every rank is on one host): a host lost next loses no generation.

The fakes are tests/sim/ckptfakes.py's (tests/test_checkpoint_steps.py runs
them too, a rank dropped before each step in turn); the page protocol under
them is the C simulator's.  A failure prints its seed, which replays it.
"""
import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]

from ckptfakes import (NPAGES, PAGE, Coll, Core, Job, Memory,  # noqa: E402
                       Scheduler, Violation, on_every_rank, stepping_stores)
from libdsm import checkpoint as ckpt          # noqa: E402  (the shipped code)
from libdsm.ckptstore import Store             # noqa: E402


# ---------------------------------------------------------------- one seed

def value(epoch, page):
    """The byte the program writes to page in epoch (never 0: holes stay holes)."""
    return (epoch * 37 + page * 11) % 251 + 1


class World:
    """One seed: the job's hosts and store, what each epoch writes, and what
    each generation saved; the checks."""

    def __init__(self, seed, say=None, hosts=None, buddy=None, release=False):
        """The seed's own choices, or (a test's) the hosts of the ranks and the store."""
        self.seed, self.rng = seed, random.Random(seed)
        rng = self.rng
        if hosts is None:
            n = rng.randint(2, 4)
            cuts = set(rng.sample(range(1, n), rng.randint(0, n - 1)))
            hosts = ["h%d" % sum(c <= r for c in cuts) for r in range(n)]
            buddy, release = rng.random() < 0.5, rng.random() < 0.5
        self.n, self.hosts, self.buddy, self.release = len(hosts), list(hosts), buddy, release
        self.steps = []                     # each rank's steps in the last run
        self.tmp = tempfile.mkdtemp(prefix="ckptsim-", dir=ckpt.SHM)  # (fsync: free)
        self.where = "sim%d-%d" % (os.getpid(), seed) if self.buddy else \
            os.path.join(self.tmp, "ck")
        self.names = set(self.hosts)        # every host the job ran on: their stores
        self.epoch_of = {}                  # generation -> the epoch it saved
        self.complete = 0                   # the newest generation a checkpoint returned from
        self.losses = 0                     # hosts lost with their memory
        self.exposed = False                # one lost since the last finished restore
        self.restored = None                # the epoch the last restore went on from
        self.say = say or (lambda text: None)
        self.say("seed %d: %d ranks on %s, %s, %s" % (
            seed, self.n, ",".join(self.hosts), "buddy memory" if self.buddy else "a directory",
            "release" if self.release else "sequential"))

    def pages(self, epoch):
        rng = random.Random(self.seed * 1009 + epoch)
        return rng.sample(range(NPAGES), rng.randint(0, NPAGES // 2))

    def region_at(self, epoch):
        """The region once the program wrote epochs 1..epoch."""
        out = bytearray(NPAGES * PAGE)
        for e in range(1, epoch + 1):
            for p in self.pages(e):
                out[p * PAGE:(p + 1) * PAGE] = bytes([value(e, p)]) * PAGE
        return bytes(out)

    def roots(self):
        if not self.buddy:
            return [self.where]
        return [self.root_of(h) for h in sorted(self.names)]

    def shown(self):
        """{generation: its manifest} of every generation some host shows."""
        out = {}
        for root in self.roots():
            store = Store(root)
            for gen in store.generations():
                with contextlib.suppress(Exception):    # (refused meanwhile: not shown)
                    out.setdefault(gen, store.manifest(gen))
        return out

    def check(self):
        """No generation half visible; one at least as new as the last complete one."""
        shown = self.shown()
        for gen, doc in shown.items():
            for entry in doc["parts"] + doc["states"]:
                if not any(Store(root).holds(gen, entry["name"], entry["nbytes"])
                           for root in self.roots()):
                    raise Violation("generation %d is shown, but %s is in no store whole"
                                    % (gen, entry["name"]))
        if self.complete and max(shown, default=0) < self.complete:
            raise Violation("generation %d was complete, and no generation as new is shown "
                            "(shown: %s)" % (self.complete, sorted(shown)))

    def newest(self):
        self.check()
        return max(self.shown(), default=0)

    def lose(self, rank, surely=False):
        """After rank was dropped: in buddy memory (sometimes, or surely), its
        host and the host's memory too, unless one was lost since the last
        restore that finished; its ranks go to another host, or a new one."""
        host = self.hosts[rank]
        if not self.buddy or self.exposed or len(set(self.hosts)) < 2 or \
                not surely and self.rng.random() < 0.3:
            return
        self.exposed, self.losses = True, self.losses + 1
        shutil.rmtree(self.root_of(host), ignore_errors=True)
        to = self.rng.choice(sorted(set(self.hosts) - {host}) + ["s%d" % self.losses])
        self.hosts = [to if h == host else h for h in self.hosts]
        self.names.add(to)
        self.say("host %s lost with its memory; its ranks go to %s" % (host, to))

    def held_twice(self, gen):
        """After a restore of gen in buddy memory: it is the only generation
        shown, and each of its parts and states is whole in the stores of
        two of the job's hosts (of its one host, when there is one)."""
        shown = self.shown()
        if sorted(shown) != [gen]:
            raise Violation("after the restore of generation %d the hosts show %s"
                            % (gen, sorted(shown)))
        hosts = sorted(set(self.hosts))
        want = min(2, len(hosts))
        for entry in shown[gen]["parts"] + shown[gen]["states"]:
            on = [h for h in hosts if Store(self.root_of(h)).holds(gen, entry["name"],
                                                                   entry["nbytes"])]
            if len(on) < want:
                raise Violation("after the restore of generation %d, %s is whole on %s only, "
                                "of the hosts %s" % (gen, entry["name"], on or "no host", hosts))
        self.exposed = False

    def root_of(self, host):
        return os.path.join(ckpt.SHM, "dsm-ckpt-%s-%s" % (self.where, host))

    def remove(self):
        for root in self.roots():
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def random_drop(w, restart, checkpoints):
    """(where, which checkpoint, rank, its step there): a seed's drop in a run."""
    rng, victim = w.rng, w.rng.randrange(w.n)
    if restart and rng.random() < 0.5:
        return "restore", 0, victim, rng.randrange(16)
    return "checkpoint", rng.randrange(checkpoints), victim, rng.randrange(20)


def run_job(w, restart, drop, checkpoints, lose=None):
    """One run of the job (a restore first if restart, then checkpoints), with
    drop: None, or (where, which checkpoint, rank, its step there); the host
    lost with a dropped rank sometimes (lose None) or as lose says.  The rank
    dropped, or None."""
    job = Job(w.n, Scheduler(w.rng.choice, w.check))
    when, which, victim, at = drop or (None, None, None, None)
    env = {ckpt.JOB_VAR: w.where} if w.buddy else {ckpt.DIR_VAR: w.where}
    if restart:
        env[ckpt.RESTART_VAR] = "1"
    cks = [ckpt.Checkpoints(Memory(), Coll(job, r), r, w.hosts, NPAGES * PAGE,
                            "release" if w.release else "sequential", env, core=Core(job, r))
           for r in range(w.n)]
    try:
        with stepping_stores(job):
            epoch = 0
            if restart:
                newest = w.newest()
                if when == "restore":
                    job.dropped, job.at = victim, at
                got, _ = on_every_rank(job, lambda r: cks[r].restore())
                if job.hit.is_set():
                    return _dropped(w, job, "a restore", lose)
                epoch = _restored(w, job, got, newest)
            for i in range(checkpoints):
                epoch += 1
                for p in w.pages(epoch):
                    job.map[p * PAGE:(p + 1) * PAGE] = bytes([value(epoch, p)]) * PAGE
                w.epoch_of[cks[0].last + 1] = epoch
                if when == "checkpoint" and i == which:
                    job.dropped, job.at = victim, job.steps[victim] + at
                got, _ = on_every_rank(job, lambda r, e=epoch: _checkpoint(w, cks[r], r, e))
                if job.hit.is_set():
                    return _dropped(w, job, "checkpoint of epoch %d" % epoch, lose)
                _no_failure(job, got)
        return None
    finally:
        w.steps = list(job.steps)
        job.close()


def _checkpoint(w, ck, rank, epoch):
    ck.checkpoint({"epoch": epoch, "rank": rank})
    w.complete = max(w.complete, ck.last)


def _dropped(w, job, what, lose):
    if job.sched.failure:
        raise job.sched.failure
    w.say("rank %d dropped at its step %d, in %s" % (job.dropped, job.at, what))
    if lose is not False:
        w.lose(job.dropped, surely=lose)
    w.check()
    return job.dropped


def _no_failure(job, got):
    if job.sched.failure:
        raise job.sched.failure
    bad = {r: v for r, v in got.items() if isinstance(v, BaseException)}
    if bad:
        raise Violation("ranks failed with no rank dropped: %r" % bad)


def _restored(w, job, got, newest):
    """Check a restore that every rank finished: the epoch it went on from."""
    _no_failure(job, got)
    if not newest:
        if any(v is not None for v in got.values()) or any(job.map[:]):
            raise Violation("no generation shown, yet the restore gave %r" % got)
        w.say("restore: nothing to restore, a fresh start")
        w.restored, w.exposed = 0, False
        return 0
    epoch = w.epoch_of[newest]
    want = {r: {"epoch": epoch, "rank": r} for r in range(w.n)}
    if got != want:
        raise Violation("restore of generation %d (epoch %d) gave the states %r"
                        % (newest, epoch, got))
    if job.map[:] != w.region_at(epoch):
        raise Violation("restore of generation %d (epoch %d): the region differs"
                        % (newest, epoch))
    if w.buddy:
        w.held_twice(newest)
    w.say("restore: generation %d, epoch %d" % (newest, epoch))
    w.restored = epoch
    return epoch


def run_seed(seed, say=None):
    """One seed: up to 3 runs that end with a rank dropped, one that does not,
    and a last restore.  Raises Violation."""
    w = World(seed, say)
    try:
        faults = w.rng.randint(0, 3)
        restart = False
        for run in range(faults + 1):
            checkpoints = w.rng.randint(1, 4)
            drop = random_drop(w, restart, checkpoints) if run < faults else None
            dropped = run_job(w, restart, drop, checkpoints)
            restart = True
            if dropped is None:
                break
        run_job(w, True, None, 0)
    except Violation as e:
        raise Violation("seed %d: %s" % (seed, e)) from None
    finally:
        w.remove()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0:300", metavar="A:B", help="run seeds A..B-1")
    p.add_argument("--seed", type=int, help="run this seed only")
    p.add_argument("-v", "--verbose", action="store_true", help="say what each seed does")
    a = p.parse_args(argv)
    first, end = (a.seed, a.seed + 1) if a.seed is not None else map(int, a.seeds.split(":"))
    say = (lambda text: print(text, flush=True)) if a.verbose else None
    for seed in range(first, end):
        try:
            with open(os.devnull, "w") as quiet, \
                    contextlib.redirect_stderr(sys.stderr if a.verbose else quiet):
                run_seed(seed, say)
        except Violation as e:
            print("ckptsim: %s (replay: %s tests/sim/ckptsim.py --seed %d -v)"
                  % (e, os.path.relpath(sys.executable), seed))
            return 1
    print("ckptsim: %d seeds passed" % (end - first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
