"""The checkpoint protocol's steps, run as shipped code: libdsm/checkpoint.py's
Checkpoints on N ranks (threads), over fake collectives and a fake core,
with the real Store, in a directory and in buddy memory; a rank dropped
before each of its steps in turn.  Then no generation is ever half
visible, and a restore (the shipped restore, by ranks started afresh)
always finds a complete one: the one being made if its manifest is out
(and its files are all somewhere), else the one before, bit for bit.

What is modelled, and why:
- The memory is one memfd every rank maps (a coherent DSM seen from
  above: any rank reading a page gets its current bytes); each rank holds
  its home block writable, as after its own writes in sequential mode.
  Once a rank is gone, a pin or prefetch of its pages fails, as the
  fetch from it would.
  The page protocol under it is the C simulator's business (tests/sim).
- A step is a call into the collectives, the core (pin, unpin, prefetch)
  or the Store (write, write_manifest, retire_before, drop_before).  A dropped rank stops
  there for good, as under SIGKILL (a file it was writing stays a
  temporary), and the others fail at their next collective, as they do
  on losing a peer.  Each rank still takes its steps in its own order;
  the ranks' interleaving is the threads'.
- drop_before runs in the foreground (the shipped one removes old files in
  a thread): what matters, its manifest first, is the same.
- In buddy memory, the dropped rank's host loses its memory too before
  the restore: losing any one host loses no generation.
"""
import mmap
import os
import shutil
import threading
import uuid

import pytest

from libdsm import checkpoint as ckpt
from libdsm.ckptstore import Store

RANKS, PAGE, NPAGES = 3, 4096, 48
WRITTEN = 10
"""Pages written at the start of each rank's block of 16: the rest stay holes."""


class Dropped(BaseException):
    """Unwinds a dropped rank's thread at the end of a trial."""


class PeerLost(Exception):
    """A collective found a rank gone, as PeerError does."""


class Gate:
    """A barrier of n threads that fails (PeerLost) for those still waiting,
    and those to come, once a rank is gone; a thread it let through goes on."""

    def __init__(self, n):
        self.n, self.cond = n, threading.Condition()
        self.count = self.passes = 0
        self.dead = False

    def wait(self):
        with self.cond:
            if self.dead:
                raise PeerLost()
            self.count += 1
            if self.count == self.n:
                self.count, self.passes = 0, self.passes + 1
                self.cond.notify_all()
                return
            passes = self.passes
            while self.passes == passes:
                if self.dead:
                    raise PeerLost()
                if not self.cond.wait(timeout=60):
                    raise PeerLost("no rank came in 60 s")

    def kill(self):
        with self.cond:
            self.dead = True
            self.cond.notify_all()


class Job:
    """The shared side of N fake ranks: the memory, the collectives' slots,
    each rank's step count, and which rank stops at which step."""

    def __init__(self, dropped=None, at=None):
        self.fd = os.memfd_create("ckpt-steps")
        os.ftruncate(self.fd, NPAGES * PAGE)
        self.map = mmap.mmap(self.fd, NPAGES * PAGE)
        self.gate = Gate(RANKS)
        self.slots = [None] * RANKS
        self.steps = [0] * RANKS
        self.dropped, self.at = dropped, at
        self.released = threading.Event()
        self.local = threading.local()

    def step(self):
        rank = self.local.rank
        if rank == self.dropped and self.steps[rank] == self.at:
            self.gate.kill()
            self.released.wait()
            raise Dropped()
        self.steps[rank] += 1

    def close(self):
        os.close(self.fd)               # the map goes with the last view of it


class Coll:
    """One rank's collectives: the ones checkpoint.py calls."""

    def __init__(self, job, rank):
        self.job, self.rank = job, rank

    def _all(self, obj):
        self.job.step()
        self.job.slots[self.rank] = obj
        self.job.gate.wait()
        out = list(self.job.slots)
        self.job.gate.wait()
        return out

    def barrier(self):
        self._all(None)

    def gather(self, obj, root):
        out = self._all(obj)
        return out if root is None or root == self.rank else None

    def bcast(self, obj, root):
        return self._all(obj)[root]


class Core:
    """One rank's C core, as checkpoint.py sees it (libdsm/_binding's calls)."""
    PROT_NAMES = {0: "none", 1: "read", 2: "rw"}

    def __init__(self, job, rank):
        self.job, self.rank = job, rank

    def region_view(self, base, size):
        return memoryview(self.job.map)[:size]

    def region_fd(self):
        return self.job.fd

    def page_home(self, page):
        return page * RANKS // NPAGES

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
    """The real Store; each of its writes is a step of the rank calling it."""

    def __init__(self, root, job):
        super().__init__(root)
        self.job = job

    def write(self, gen, name, chunks, checksum=True, recycle=False):
        self.job.step()
        return super().write(gen, name, chunks, checksum, recycle)

    def retire_before(self, gen):
        self.job.step()
        super().retire_before(gen)

    def write_manifest(self, gen, doc):
        self.job.step()
        super().write_manifest(gen, doc)

    def drop_before(self, gen, background=False):
        self.job.step()
        super().drop_before(gen)


def fill(job, gen):
    """What the program wrote before checkpoint gen: WRITTEN pages of each
    rank's block (and in gen 3 one more), each byte gen * 16 + page % 16."""
    block = NPAGES // RANKS
    for r in range(RANKS):
        for p in range(r * block, r * block + WRITTEN + (gen == 3)):
            job.map[p * PAGE:(p + 1) * PAGE] = bytes([gen * 16 + p % 16]) * PAGE


def expected(gen):
    out = bytearray(NPAGES * PAGE)
    job = Job()
    try:
        fill(job, gen)
        out[:] = job.map[:]
    finally:
        job.close()
    return bytes(out)


def ranks(job, where, monkeypatch, restart=False):
    """N Checkpoints over job; where: a directory, or a buddy-memory job name."""
    monkeypatch.setattr(ckpt, "Store", lambda root: StepStore(root, job))
    env = {ckpt.DIR_VAR: where} if where.startswith("/") else {ckpt.JOB_VAR: where}
    if restart:
        env[ckpt.RESTART_VAR] = "1"
    hosts = ["h%d" % r for r in range(RANKS)]
    return [ckpt.Checkpoints(Memory(), Coll(job, r), r, hosts, NPAGES * PAGE, "sequential",
                             env, core=Core(job, r)) for r in range(RANKS)]


def on_every_rank(job, fn):
    """fn(rank) on a thread per rank: {rank: result or the exception}.  The
    dropped rank's thread is left standing (job.released unwinds it)."""
    out, threads = {}, []

    def run(r):
        job.local.rank = r
        try:
            out[r] = fn(r)
        except (Exception, Dropped) as e:
            out[r] = e
            if not isinstance(e, Dropped):
                job.gate.kill()
    for r in range(RANKS):
        threads.append(threading.Thread(target=run, args=(r,), daemon=True))
        threads[-1].start()
    for r, t in enumerate(threads):
        if r != job.dropped:
            t.join(timeout=60)
            assert not t.is_alive(), "rank %d hangs" % r
    return out, threads


def checkpoint(job, cks, gen):
    fill(job, gen)
    return on_every_rank(job, lambda r: cks[r].checkpoint({"gen": gen, "rank": r}))


def roots(where):
    if where.startswith("/"):
        return [where]
    return [os.path.join(ckpt.SHM, "dsm-ckpt-%s-h%d" % (where, r)) for r in range(RANKS)]


def visible_whole(where):
    """Every generation a restore could take is whole: each generation with a
    manifest anywhere has each of its files, whole (size and checksum), in
    some store of the job, except one older than a whole one that was being
    dropped (each host drops its own: a rank gone between two hosts' drops
    leaves the old manifest on one and its parts gone from the others; a
    restore refuses it as "on no rank", and never reaches it past the newer
    whole one).  The newest whole generation."""
    gens = {g for root in roots(where) for g in Store(root).generations()}
    whole = set()
    for gen in gens:
        doc = next(Store(r).manifest(gen) for r in roots(where)
                   if gen in Store(r).generations())
        if all(any(_whole(Store(r), gen, e) for r in roots(where))
               for e in doc["parts"] + doc["states"]):
            whole.add(gen)
    assert whole and all(g < max(whole) for g in gens - whole), (gens, whole)
    return max(whole)


def _whole(store, gen, entry):
    try:
        store.read(gen, entry["name"], entry["nbytes"], entry["crc"])
        return True
    except Exception:
        return False


def restore(where, monkeypatch):
    """The shipped restore on N fresh ranks: ({rank: state}, the region)."""
    job = Job()
    try:
        cks = ranks(job, where, monkeypatch, restart=True)
        got, _ = on_every_rank(job, lambda r: cks[r].restore())
        return got, bytes(job.map[:])
    finally:
        job.close()


def steps_of_a_checkpoint(where, monkeypatch):
    """How many steps each rank takes in one undisturbed checkpoint (the second)."""
    job = Job()
    try:
        cks = ranks(job, where, monkeypatch)
        checkpoint(job, cks, 1)
        before = list(job.steps)
        checkpoint(job, cks, 2)
        return [b - a for a, b in zip(before, job.steps)]
    finally:
        job.close()
        for root in roots(where):
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("store", ["directory", "buddy"])
def test_a_rank_dropped_before_any_step_leaves_a_complete_generation(tmp_path, monkeypatch,
                                                                      store):
    def place(name):
        return str(tmp_path / name) if store == "directory" else "t" + uuid.uuid4().hex[:12]
    counts = steps_of_a_checkpoint(place("count"), monkeypatch)
    assert min(counts) >= 8, counts                 # barriers, gathers, writes, pins
    seen = set()
    for dropped in range(RANKS):
        for at in range(counts[dropped] + 1):
            where = place("d%d-at%d" % (dropped, at))
            job = Job()
            cks = ranks(job, where, monkeypatch)
            for gen in (1, 2):
                got, _ = checkpoint(job, cks, gen)
                assert not any(isinstance(v, BaseException) for v in got.values()), got
            job.dropped, job.at = dropped, job.steps[dropped] + at
            got, threads = checkpoint(job, cks, 3)
            try:
                newest = visible_whole(where)
                if store == "buddy":    # the dropped rank's host loses its memory
                    shutil.rmtree(roots(where)[dropped], ignore_errors=True)
                    newest = visible_whole(where)
                made = newest == 3
                states, region = restore(where, monkeypatch)
                gen = 3 if made else 2
                assert states == {r: {"gen": gen, "rank": r} for r in range(RANKS)}, \
                    (dropped, at, states)
                assert region == expected(gen), (dropped, at, gen)
                seen.add(gen)
            finally:
                job.released.set()
                threads[dropped].join(timeout=60)
                job.close()
                for root in roots(where):
                    shutil.rmtree(root, ignore_errors=True)
    assert seen == {2, 3}               # drops before and after the manifest both came
