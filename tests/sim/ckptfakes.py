"""The fakes the checkpoint protocol runs over in tests/sim/ckptsim.py and
tests/test_checkpoint_steps.py: N ranks as threads of which one runs at a
time (Scheduler: at each step a choice says which goes on, and the checks
run in between), their collectives (Coll, over a Gate that fails once a
rank is gone), a C core (Core) over one memfd every rank maps (a coherent
DSM seen from above: any rank reading a page gets its current bytes; rank r
homes, and holds writable, block r), and the real Store with each of its
writes a step.  A dropped rank stops at its step for good, as under SIGKILL
(a file it was writing stays a temporary); the others fail at their next
collective, as they do on losing a peer, and a pin of its pages fails.
The page protocol under it is the C simulator's business (tests/sim).
"""
import contextlib
import mmap
import os
import threading
import time

from libdsm import checkpoint as ckpt
from libdsm.ckptstore import Store

PAGE, NPAGES = 4096, 48
STALL_S = 60


class Dropped(BaseException):
    """Unwinds a dropped rank's thread at the end of a run."""


class PeerLost(Exception):
    """A collective found a rank gone, as PeerError does."""


class Violation(AssertionError):
    """An invariant broken: what, at which step."""


class Scheduler:
    """One rank's thread runs at a time; at each step `pick` chooses which goes
    on (a seeded choice, or always the lowest); `check` runs in between."""

    def __init__(self, pick, check=None):
        self.cond = threading.Condition()
        self.pick, self.check = pick, check
        self.runnable, self.turn, self.failure = set(), None, None
        self.dirty = True               # a store changed since the last check

    def begin(self, ranks):
        with self.cond:
            self.runnable = set(ranks)
            self.turn = self.pick(sorted(self.runnable))
            self.cond.notify_all()

    def wait_turn(self, me):
        """(cond held) until it is me's turn."""
        while self.turn != me:
            if not self.cond.wait(timeout=STALL_S):
                raise PeerLost("rank %d: no turn in %d s" % (me, STALL_S))

    def switch(self, me):
        """(cond held) run the checks, hand the turn on, and if me can go on, wait for it."""
        if self.check is not None and self.dirty and self.failure is None:
            self.dirty = False
            try:
                self.check()
            except Exception as e:      # noqa: BLE001  (reported by the driver)
                self.failure = e
        self.turn = self.pick(sorted(self.runnable)) if self.runnable else None
        self.cond.notify_all()
        if me in self.runnable:
            self.wait_turn(me)

    def leave(self, me):
        with self.cond:
            self.runnable.discard(me)
            self.switch(me)


class Gate:
    """A barrier of n ranks under the scheduler that fails (PeerLost) for those
    waiting, and those to come, once a rank is gone."""

    def __init__(self, n, sched):
        self.n, self.sched = n, sched
        self.count = self.passes = 0
        self.waiting, self.dead = set(), False

    def wait(self, me):
        s = self.sched
        with s.cond:
            if self.dead:
                raise PeerLost()
            self.count += 1
            if self.count == self.n:
                self.count, self.passes = 0, self.passes + 1
                s.runnable |= self.waiting
                self.waiting = set()
                return
            passes = self.passes
            self.waiting.add(me)
            s.runnable.discard(me)
            s.switch(me)
            s.wait_turn(me)
            if self.passes == passes:
                raise PeerLost()

    def kill(self):
        """(cond held) a rank is gone."""
        self.dead = True
        self.sched.runnable |= self.waiting
        self.waiting = set()


class Job:
    """The shared side of N fake ranks: the memory, the collectives' slots,
    each rank's step count, and which rank stops at which step."""

    def __init__(self, n, sched, dropped=None, at=None):
        self.n, self.sched = n, sched
        self.fd = os.memfd_create("ckptsim")
        os.ftruncate(self.fd, NPAGES * PAGE)
        self.map = mmap.mmap(self.fd, NPAGES * PAGE)
        self.gate = Gate(n, sched)
        self.slots = [None] * n
        self.steps = [0] * n
        self.dropped, self.at = dropped, at
        self.released = threading.Event()
        self.hit = threading.Event()     # the dropped rank stopped
        self.threads = []               # the ranks' threads of the last collective call
        self.local = threading.local()

    def step(self):
        """A step of the calling rank: where it may be dropped, and where another may run."""
        rank, s = self.local.rank, self.sched
        with s.cond:
            if rank == self.dropped and self.steps[rank] == self.at:
                self.gate.kill()
                s.runnable.discard(rank)
                s.switch(rank)
                drop = True
            else:
                self.steps[rank] += 1
                s.switch(rank)
                drop = False
        if drop:
            self.hit.set()
            self.released.wait()
            raise Dropped()

    def close(self):
        """Unwind the dropped rank's thread (unwinding, it removes a temporary
        it was writing, which a killed process would leave; no restore reads
        temporaries), then free the memory."""
        self.released.set()
        for t in self.threads:
            t.join(timeout=STALL_S)
        os.close(self.fd)               # the map goes with the last view of it


class Coll:
    """One rank's collectives: the ones checkpoint.py calls."""

    def __init__(self, job, rank):
        self.job, self.rank = job, rank

    def _all(self, obj):
        self.job.step()
        self.job.slots[self.rank] = obj
        self.job.gate.wait(self.rank)
        out = list(self.job.slots)
        self.job.gate.wait(self.rank)
        return out

    def barrier(self):
        self._all(None)

    def gather(self, obj, root):
        out = self._all(obj)
        return out if root is None or root == self.rank else None

    def bcast(self, obj, root):
        return self._all(obj)[root]


class Core:
    """One rank's C core, as checkpoint.py sees it (libdsm/_binding's calls):
    rank r homes, and holds writable, block r of the pages."""
    PROT_NAMES = {0: "none", 1: "read", 2: "rw"}

    def __init__(self, job, rank):
        self.job, self.rank = job, rank

    def region_view(self, base, size):
        return memoryview(self.job.map)[:size]

    def region_fd(self):
        return self.job.fd

    def page_home(self, page):
        return page * self.job.n // NPAGES

    def page_prots(self, first, n):
        return bytes(2 if self.page_home(p) == self.rank else 0 for p in range(first, first + n))

    def stats(self):
        return {"homes_moved": 0}

    def prefetch(self, first, n, write):
        self._fetch(first, n)

    def pin(self, first, n, write, timeout):
        self._fetch(first, n)

    def _fetch(self, first, n):
        """A step; and pages of a rank that is gone cannot be had."""
        self.job.step()
        gone = self.job.dropped
        if self.job.gate.dead and gone is not None and gone != self.rank and \
                any(self.page_home(p) == gone for p in range(first, first + n)):
            raise PeerLost("pages %d..%d: rank %d is gone" % (first, first + n - 1, gone))

    def unpin(self, first, n):
        self.job.step()

    def trace_checkpoint(self, restore, generation, nbytes, start_ns, dur_ns):
        pass


class Memory:
    base, nbytes, page_size = 1 << 40, NPAGES * PAGE, PAGE


class StepStore(Store):
    """The real Store; each of its writes is a step of the rank calling it (the
    checks run after it), and drop removes in the foreground (what matters,
    the manifest first, is the same)."""

    def __init__(self, root, job):
        super().__init__(root)
        self.job = job

    def _then_check(self, fn, *args):
        """A step, then fn: checked at each step within it (a write pins pages
        as it goes, after it moved a recycled file away) and after it."""
        self.job.step()
        self.job.sched.dirty = True
        try:
            return fn(*args)
        finally:
            self.job.sched.dirty = True

    def write(self, gen, name, chunks, checksum=True, recycle=False, keep=None):
        return self._then_check(super().write, gen, name, chunks, checksum, recycle, keep)

    def retire(self, keep):
        self._then_check(super().retire, keep)

    def write_manifest(self, gen, doc):
        self._then_check(super().write_manifest, gen, doc)

    def refuse(self, gen):
        self._then_check(super().refuse, gen)

    def drop(self, keep, background=False):
        self._then_check(super().drop, keep)


def on_every_rank(job, fn):
    """fn(rank) on a thread per rank, under job's scheduler: {rank: result or
    the exception}.  The dropped rank's thread is left standing, stopped at
    its step (Job.close unwinds it); the threads."""
    out, threads = {}, []

    def run(r):
        job.local.rank = r
        try:
            with job.sched.cond:
                job.sched.wait_turn(r)
            out[r] = fn(r)
        except Dropped as e:
            out[r] = e
            return
        except Exception as e:          # noqa: BLE001  (the driver looks at each)
            out[r] = e
            with job.sched.cond:
                job.gate.kill()
        job.sched.leave(r)
    job.threads = threads
    for r in range(job.n):
        threads.append(threading.Thread(target=run, args=(r,), daemon=True))
        threads[-1].start()
    job.sched.begin(range(job.n))
    for r, t in enumerate(threads):
        deadline = time.monotonic() + STALL_S
        while t.is_alive() and not (r == job.dropped and job.hit.is_set()):
            if time.monotonic() > deadline:
                raise Violation("rank %d hangs" % r)
            t.join(0.01)
    return out, threads


@contextlib.contextmanager
def stepping_stores(job):
    """checkpoint.py's Store is StepStore over job for the block."""
    real = ckpt.Store
    ckpt.Store = lambda root: StepStore(root, job)
    try:
        yield
    finally:
        ckpt.Store = real
