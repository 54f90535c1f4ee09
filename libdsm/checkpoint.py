"""Checkpoints at collectives, and the restore at init (docs/checkpoint.md).

`dsm.checkpoint(state)` is a collective.  After its opening barrier (a
release and an acquire for everyone) each page is saved once, by the rank
holding its current data (in sequential mode the rank holding it writable,
else its home; in release mode its home), and each rank's pickled `state`
(libdsm.ckptstate); each rank's pages are one part of a generation
(libdsm.ckptstore), and of them only those with data (libdsm.ckptruns:
pages never written are zero, and not saved).  The generation becomes
complete when its manifest (libdsm.ckptmanifest) is written, after every
part is in.  Two are kept: the newest complete one before it (made or
restored: `kept`) and itself.  In buddy memory a checkpoint first takes
every generation but `kept` out of use on every host (their manifests
removed, then a barrier) and only then writes over their files; a
directory's are removed once the new one is complete.  No generation is
ever shown by one host with its parts gone from another.

Where: `DSM_CHECKPOINT_DIR` (dsmexec --checkpoint-dir), one directory every
rank reaches by the same path; else buddy memory: /dev/shm/dsm-ckpt-JOB-HOST
on each host (JOB from dsmexec, DSM_CHECKPOINT_JOB), which outlives the rank
processes, and a copy of each rank's part on its buddy, the next rank on
another host (none when every rank is on one host: the host's memory is
then the one place).  The buddy reads the pages through the DSM itself.

Restore (`libdsm.init()` with a directory, or on a dsmexec restart): the
ranks pool what each can read, pick the newest generation whose manifest
matches this job and whose files are all somewhere, and load each part on
one rank that has it (any rank can load any part: parts are by page runs).
A part whose checksum fails refuses the generation (its manifest is
renamed *.refused) and the one before is tried.  State i goes to rank i;
ranks beyond the saved count get None.  In buddy memory the generation
restored is then held twice again before the program goes on: each part
and state on its keeper's host and its buddy's (the pages read through the
DSM where a host lacks them: a lost host's parts, a new host's), so that a
second host lost before the next checkpoint still leaves it whole.
"""
import os
import re
import sys
import time

from libdsm import _binding, ckptmanifest
from libdsm.ckptmanifest import buddy_of
from libdsm.ckptruns import data_runs, extend, mask, pack_runs, runs_of, unpack_runs
from libdsm.ckptstate import dumps_state, loads_state
from libdsm.ckptstore import CheckpointError, Store, part_name
from libdsm.pinned import PIN_TIMEOUT

DIR_VAR, JOB_VAR, RESTART_VAR = "DSM_CHECKPOINT_DIR", "DSM_CHECKPOINT_JOB", "DSM_CHECKPOINT_RESTART"
SHM = "/dev/shm"
COPY_BYTES = 4 << 20


class Checkpoints:
    """One rank's checkpoints.  memory: the user's region; coll: the
    collectives; mapped: the bytes the core maps (region + system area);
    consistency: the job's mode (release mode has no pins); core: the
    C core's calls it makes (libdsm._binding; a test gives a fake)."""

    def __init__(self, memory, coll, rank, hostnames, mapped, consistency, environ=None,
                 core=_binding):
        environ = os.environ if environ is None else environ
        self._core = core
        self._prot = {name: value for value, name in core.PROT_NAMES.items()}
        self._release = consistency == "release"
        self._memory, self._coll = memory, coll
        self._rank, self._hosts = rank, list(hostnames)
        self._size = len(self._hosts)
        self._ps = memory.page_size
        self._npages = mapped // self._ps
        self._view = core.region_view(memory.base, mapped)
        directory = environ.get(DIR_VAR, "").strip()
        self.directory = os.path.abspath(directory) if directory else None
        self._job = environ.get(JOB_VAR, "").strip() or None
        self._restart = bool(environ.get(RESTART_VAR, "").strip())
        self._store = Store(self.directory) if self.directory else None
        self.last = 0                   # the newest generation seen or made
        self.kept = 0                   # the newest complete one: made or restored
        self._loaded = None             # restore: the files this rank read, by name
        self._runs = None               # (homes_moved then, this rank's home runs)
        self._dirty = []                # restore: the runs read into the region so far
        self._restored_bytes = 0
        self.counters = {"checkpoints": 0, "checkpoint_bytes": 0, "checkpoint_ns": 0,
                         "restores": 0, "restore_bytes": 0, "restore_ns": 0}

    # ------------------------------------------------------------ where
    def _buddy_mode(self):
        return self.directory is None

    def _open_store(self):
        """The store; buddy memory's is named per job (rank 0's pid when run
        alone) and host, so that hosts sharing a machine keep apart."""
        if self._store is None:
            job = self._job or self._coll.bcast("pid%d" % os.getpid(), 0)
            host = re.sub(r"[^A-Za-z0-9.-]", "_", self._hosts[self._rank])
            self._store = Store(os.path.join(SHM, "dsm-ckpt-%s-%s" % (job, host)))
        return self._store

    def _keeps_manifest(self):
        """Who writes manifests: rank 0 in a directory; the first rank of each host in memory."""
        if not self._buddy_mode():
            return self._rank == 0
        return self._hosts.index(self._hosts[self._rank]) == self._rank

    # ------------------------------------------------------------ saving
    def _home_runs(self):
        """This rank's home pages as runs; recomputed only after homes moved."""
        moved = self._core.stats()["homes_moved"]
        if self._runs is None or self._runs[0] != moved:
            import numpy as np
            homes = np.fromiter(map(self._core.page_home, range(self._npages)), np.int32,
                                self._npages)
            self._runs = (moved, runs_of(homes == self._rank))
        return self._runs[1]

    def _saved_runs(self, homes):
        """The pages this rank saves, as runs.  In sequential mode those it
        holds writable (their only current copy, saved where it is, with no
        transfer and no downgrade) and those it homes that no rank holds
        writable; in release mode, after the barrier, those it homes.  Of
        the pages current here only those with data (the rest are zero,
        never written); pages not current here are fetched, all of them."""
        if self._release:
            return data_runs(self._core.region_fd(), self._ps, homes)
        import numpy as np
        prot = self._core.page_prots(0, self._npages)
        held = np.frombuffer(b"".join(self._coll.gather(prot, None)), np.uint8)
        held = held.reshape(self._size, self._npages) == self._prot["rw"]
        mine = held[self._rank] | (mask(homes, self._npages) & ~held.any(axis=0))
        here = np.frombuffer(prot, np.uint8) != self._prot["none"]
        out = []
        fd = self._core.region_fd()
        for first, count in sorted(data_runs(fd, self._ps, runs_of(mine & here)) +
                                   runs_of(mine & ~here)):
            extend(out, first, count)
        return out

    def _hold(self, first, count, write):
        """Make pages [first, first + count) current here: pinned, or in release
        mode (no pins) fetched."""
        if self._release:
            self._core.prefetch(first, count, write)
        else:
            self._core.pin(first, count, write, PIN_TIMEOUT)

    def _let_go(self, first, count):
        if not self._release:
            self._core.unpin(first, count)

    def _buffers(self, runs, write=False):
        """Buffers over the pages of runs, in order: to save (their bytes) or,
        with write, to restore (the caller fills each before it asks for the
        next).  The pages themselves, pinned; in release mode, which has no
        pins, copies in pieces of COPY_BYTES (copied back in after, with write).

        Parts in buddy memory are written without a checksum: the copy is
        then the whole cost.  That is safe because a checksum guards
        against what memory does not do: a file in /dev/shm is never on a
        device, cannot be torn (it is renamed into place whole, and its
        size is checked) and is gone with the host that holds it; a bit
        flipped in RAM would as likely be one in the region itself."""
        for first, count in runs:
            view = self._view[first * self._ps:(first + count) * self._ps]
            self._hold(first, count, write)
            try:
                if not self._release:
                    yield view
                    continue
                for at in range(0, len(view), COPY_BYTES):
                    piece = view[at:at + COPY_BYTES]
                    buf = bytearray(len(piece)) if write else bytes(piece)
                    yield buf
                    if write:
                        piece[:] = buf
            finally:
                self._let_go(first, count)

    def checkpoint(self, state):
        """Collective: save the region and state as the next generation."""
        t0 = time.monotonic_ns()
        blob = dumps_state(state, self._memory)
        store = self._open_store()
        gen = self.last + 1
        if self._buddy_mode() and self._keeps_manifest():
            store.retire(self.kept)     # their files are written over (recycle) ...
        self._coll.barrier()            # ... once no host shows them any more
        homes = self._home_runs()
        runs = self._saved_runs(homes)
        memory = self._buddy_mode()
        nbytes, crc = store.write(gen, part_name("part", self._rank), self._buffers(runs),
                                  checksum=not memory, recycle=memory, keep=self.kept)
        snbytes, scrc = store.write(gen, part_name("state", self._rank), [blob])
        buddy = self._buddy_mode() and buddy_of(self._rank, self._hosts) is not None
        every = self._coll.gather((pack_runs(runs), nbytes, crc, snbytes, scrc,
                                   blob if buddy else None, pack_runs(homes)), None)
        every = [(unpack_runs(e[0]), *e[1:6], unpack_runs(e[6])) for e in every]
        if self._buddy_mode():
            self._keep_copies(store, gen, every)
        self._coll.barrier()            # every part (and copy) is in
        if self._keeps_manifest():
            store.write_manifest(gen, ckptmanifest.make(gen, every, self._ps, self._npages,
                                                        self._hosts))
            store.drop({gen, self.kept}, background=True)
        self._coll.barrier()            # the generation is complete everywhere
        self.last = self.kept = gen
        self._count("checkpoint", gen, nbytes + snbytes, t0)

    def _keep_copies(self, store, gen, every):
        """Write the parts of the ranks whose buddy this rank is, read through the DSM."""
        for r, (runs, nbytes, _, _, _, blob, _) in enumerate(every):
            if r == self._rank or buddy_of(r, self._hosts) != self._rank:
                continue
            got, _ = store.write(gen, part_name("part", r), self._buffers(runs), checksum=False,
                                 recycle=True, keep=self.kept)
            if got != nbytes:
                raise CheckpointError("rank %d: the copy of rank %d's part has %d bytes, "
                                      "not %d" % (self._rank, r, got, nbytes))
            store.write(gen, part_name("state", r), [blob])

    def _count(self, what, gen, nbytes, t0):
        """A checkpoint or restore done: into the counters (dsm.stats()) and,
        under dsmexec --trace, an event."""
        took = time.monotonic_ns() - t0
        self.counters[what + "s"] += 1
        self.counters[what + "_bytes"] += nbytes
        self.counters[what + "_ns"] += took
        self._core.trace_checkpoint(what == "restore", gen, nbytes, t0, took)

    # ------------------------------------------------------------ restoring
    def restore(self):
        """Collective, at init: restore the newest usable generation; this
        rank's state, or None (fresh start, or no state saved for it)."""
        if self.directory is None and not self._restart:
            return None                 # nothing can have been saved for this job
        t0 = time.monotonic_ns()
        store = self._open_store()
        have = {g: store.files(g) for g in store.generations()}
        pooled = self._coll.gather((have, store.highest()), None)
        every = [h for h, _ in pooled]
        gens = sorted({g for h in every for g in h}, reverse=True)
        # new generations go past any begun anywhere, so that no stale file
        # of an unfinished one is ever taken for a part of a new one
        self.last = max(top for _, top in pooled)
        for gen in gens:
            holders = {}
            for r, h in enumerate(every):
                for name in h.get(gen, ()):
                    holders.setdefault(name, []).append(r)
            src = min(r for r, h in enumerate(every) if gen in h)
            doc = self._coll.bcast(ckptmanifest.read(store, gen) if self._rank == src
                                   else None, src)
            problem, plan = ckptmanifest.plan(doc, holders, self._ps, self._npages,
                                              self._size)
            if problem is None:
                self._place(doc)
                problem = self._agree(self._load(store, gen, doc, plan))
                if problem is None:
                    return self._apply(store, gen, doc, t0)
                if self._keeps_manifest():
                    store.refuse(gen)
                # parts hold only pages with data, the rest being zero: the
                # generation before must find zero what this one wrote
                self._clean()
            self._say("checkpoint generation %d refused: %s; trying the one before"
                      % (gen, problem))
        if gens:
            self._say("no usable checkpoint generation: starting afresh")
        return None

    def _load(self, store, gen, doc, plan):
        """Read the files plan gives this rank, checking each: parts straight
        into the region, states into self._loaded ({name: bytes}).  The
        problem with one, or None."""
        self._loaded, self._restored_bytes = {}, 0
        for entry in doc["parts"] + doc["states"]:
            if plan[entry["name"]] != self._rank:
                continue
            try:
                if entry in doc["states"]:
                    self._loaded[entry["name"]] = store.read(gen, entry["name"],
                                                             entry["nbytes"], entry["crc"])
                    continue
                self._dirty.extend(entry["runs"])
                store.read_into(gen, entry["name"], entry["nbytes"], entry["crc"],
                                self._buffers(entry["runs"], write=True))
                self._restored_bytes += entry["nbytes"]
            except CheckpointError as e:
                return "rank %d: %s" % (self._rank, e)
        return None

    def _clean(self):
        """Zero the pages a refused generation was read into: a fresh start."""
        zeros = bytes(COPY_BYTES)
        for first, count in self._dirty:
            view = self._view[first * self._ps:(first + count) * self._ps]
            for at in range(0, len(view), COPY_BYTES):
                view[at:at + COPY_BYTES] = zeros[:len(view) - at]
        self._dirty = []
        self._coll.barrier()

    def _agree(self, problem):
        """Every rank's problem with its files, pooled: the first one, or None."""
        problems = [p for p in self._coll.gather(problem, None) if p]
        return problems[0] if problems else None

    def _apply(self, store, gen, doc, t0):
        """The generation is in: hand out the states.  It is the one kept
        through the next checkpoint, so in buddy memory it is first held
        twice again (_copy_again), then every host shows it (its manifest
        rewritten where it is missing: the keeper there died first, or the
        host is new) and no other (retired, as a checkpoint's start does):
        losing any one host, before the next checkpoint too, then still
        leaves it whole and visible, and no generation half visible."""
        states = self._coll.gather(self._loaded, None)     # every part is in the region
        blobs = {name: blob for loaded in states for name, blob in loaded.items()}
        if self._buddy_mode():
            self._copy_again(store, gen, doc, blobs)
            self._coll.barrier()            # every copy is in
            if self._keeps_manifest():
                if gen not in store.generations():
                    store.write_manifest(gen, doc)
                store.retire(gen)
        self._coll.barrier()
        self._loaded, self._dirty = None, []
        self.kept = gen
        blob = blobs.get(part_name("state", self._rank))
        self._count("restore", gen, self._restored_bytes, t0)
        if self._rank == 0:
            self._say("restored checkpoint generation %d (%d ranks saved it, %d now)"
                      % (gen, doc["ranks"], self._size))
        return None if blob is None else loads_state(blob, self._memory)

    def _copy_again(self, store, gen, doc, blobs):
        """After a restore in buddy memory: put each part and state of gen
        where this job's layout keeps them, on the host of its keeper (part
        i: rank i modulo the rank count) and on its keeper's buddy's, writing
        into this rank's host the files it lacks whole (a lost host's, or
        any on a new host): the pages from the restored region, read through
        the DSM, the states from blobs (every rank's, pooled)."""
        for i, (part, state) in enumerate(zip(doc["parts"], doc["states"])):
            keeper = i % self._size
            if self._rank not in (keeper, buddy_of(keeper, self._hosts)):
                continue
            if not store.holds(gen, part["name"], part["nbytes"]):
                got, _ = store.write(gen, part["name"], self._buffers(part["runs"]),
                                     checksum=False)
                if got != part["nbytes"]:
                    raise CheckpointError("rank %d: the new copy of %s has %d bytes, not %d"
                                          % (self._rank, part["name"], got, part["nbytes"]))
            if not store.holds(gen, state["name"], state["nbytes"]):
                store.write(gen, state["name"], [blobs[state["name"]]])

    def _place(self, doc):
        """With the rank count it was saved with, put the user region's homes back
        where they were (dsm.place) before the pages are written."""
        if doc["ranks"] != self._size:
            return
        moved = self._coll.gather(doc["homes"][self._rank] != self._home_runs(), None)
        if not any(moved):
            return
        user = self._memory.nbytes // self._ps
        homes = [0] * user
        for r, runs in enumerate(doc["homes"]):
            for first, count in runs:
                homes[first:min(first + count, user)] = [r] * max(0, min(count, user - first))
        self._coll.place(0, user, homes)

    def _say(self, message):
        if self._rank == 0:
            sys.stderr.write("libdsm: %s\n" % message)
            sys.stderr.flush()

    # ------------------------------------------------------------ the end
    def finished(self):
        """After finalize: buddy memory is this job's and goes with it."""
        if self._buddy_mode() and self._store is not None and self._keeps_manifest():
            self._store.remove()
