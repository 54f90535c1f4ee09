"""Collectives and the DSM's lifecycle: barrier, bcast, allreduce, reduce,
gather, allgather, scatter, alltoall, scan, exscan, reduce_scatter,
finalize, and the check every entry point makes (not finalized, SIGSEGV
handler still ours).  The C comm threads run barrier, bcast, reduce and
gather in O(log N) exchanges (libdsm/csrc/coll.h), or with host-shared
memory in its control area (libdsm/csrc/hostcoll.c); the others are built on
them.  Ranks that call different collectives, or pass different shapes,
dtypes, ops or roots, all get a CollectiveError that says which
(libdsm/mismatch.py).

bcast pickles its value with each Allocation as a persistent ID (pickle's
way to refer to objects outside the stream): only (offset, nbytes) travel,
and the receiving rank binds them to its own Memory.  So an Allocation
arrives with a working `.mem` however deep in the value it sits, and
nothing has to look the Memory up.
"""
import io
import pickle
import struct
import threading

import numpy as np

from libdsm import _binding, mismatch, reductions
from libdsm.alloc import Allocation
from libdsm.errors import BarrierTimeoutError, CollectiveError, DsmError, StateError

_ENTRY = struct.Struct("<II")       # a gathered value: rank, length, then the bytes


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return (obj.offset, obj.nbytes) if isinstance(obj, Allocation) else None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, memory):
        super().__init__(io.BytesIO(data))
        self._memory = memory

    def persistent_load(self, pid):
        offset, nbytes = pid
        return Allocation(offset, nbytes, self._memory)


def dumps(value):
    """value as bytes for bcast."""
    out = io.BytesIO()
    _Pickler(out, pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def loads(data, memory):
    """The value dumps() made, its Allocations bound to memory."""
    return _Unpickler(data, memory).load()


class Collectives:
    """One rank's collectives over the C core.  `memory` is what received
    Allocations are bound to; rank and host name this rank in errors.
    host_shared: the ranks share one copy of the memory (DSM_SHARE=host):
    every collective goes through it (libdsm/csrc/hostcoll.c, no message).
    homes_fixed: a placement moves no home (share=host: on one host nothing
    is to move; on several, the homes are the hosts' leaders)."""

    def __init__(self, memory, rank, size, host, host_shared=False, homes_fixed=False):
        self._memory = memory
        self._barrier = _binding.host_barrier if host_shared else _binding.barrier
        self._host_shared = host_shared
        self._homes_fixed = host_shared or homes_fixed
        self._rank, self._size, self._host = rank, size, host
        self._lock = threading.Lock()
        self.finalized = False
        self._barriers = 0                  # barriers this rank entered
        self._pending = None                # a barrier that timed out, still entered
        self._arrivals = _Arrivals(rank, size)

    def check(self):
        """Raise StateError after finalize; put our SIGSEGV handler back if
        something displaced it."""
        if self.finalized:
            raise StateError("the DSM was finalized", self._rank, self._host)
        _binding.ensure_handler()

    # ------------------------------------------------------------ running one
    def _guarded(self, fn, desc):
        """fn() (one collective of the C core) under the lock; its
        CollectiveError says what differs between the ranks."""
        with self._lock:
            try:
                return fn()
            except CollectiveError as e:
                raise self._explained(e, desc) from None

    def _explained(self, e, desc):
        """The error e, said with what the ranks called (holding the lock).
        Every rank got e, so every rank joins the exchange."""
        desc = desc or mismatch.describe()      # a host barrier's, made only now
        text = mismatch.finalizing(e.what, desc, self._rank)
        if text is None and "different" in e.what:
            try:
                out = _binding.collective("gather", _binding.ROOT_ALL, dumps(desc),
                                          host=self._host_shared)
                text = mismatch.explain([loads(v, None) for v in _entries(out, self._size)])
            except DsmError:
                text = None             # the first error stands
        return CollectiveError(text, self._rank, self._host) if text else e

    def _run(self, kind, root, data, desc, **kw):
        self.check()
        self._not_pending()
        return self._guarded(lambda: _binding.collective(kind, root, data,
                                                         sig=mismatch.sig(desc),
                                                         host=self._host_shared, **kw), desc)

    def _not_pending(self):
        if self._pending is not None:
            raise CollectiveError("a barrier that timed out is still pending on this rank "
                                  "(barrier %d): call barrier() to finish it first"
                                  % self._pending.number, self._rank, self._host)

    def _root(self, root, what):
        if not isinstance(root, int) or not 0 <= root < self._size:
            raise ValueError("%s root %r out of range 0..%d" % (what, root, self._size - 1))

    # ------------------------------------------------------------ the C core's
    def barrier(self, timeout=None):
        """Wait until every rank called barrier().  Past timeout seconds,
        BarrierTimeoutError; this rank then stays in that barrier, and its
        next barrier() call goes on waiting for it (other collectives raise
        CollectiveError until it completes)."""
        if self._host_shared and timeout is None and self._pending is None \
                and not self.finalized:
            # the barrier programs loop on: its description is made only if
            # ranks called different collectives, and the handler (which
            # nothing faults on here) is put back by the other calls; each
            # costs more than the barrier itself
            self._barriers += 1
            return self._guarded(self._barrier, None)
        self.check()
        desc = mismatch.describe()
        if timeout is None and self._pending is None:
            self._barriers += 1
            self._guarded(self._barrier, desc)
            return
        if timeout is not None and not timeout >= 0:
            raise ValueError("barrier timeout must be a number of seconds >= 0, got %r"
                             % (timeout,))
        if self._pending is None:
            self._barriers += 1
            if timeout is not None:
                self._arrivals.arrive()
            self._pending = _Pending(lambda: self._guarded(self._barrier, desc),
                                     self._barriers)
        pending = self._pending
        if not pending.done.wait(timeout):
            raise BarrierTimeoutError(
                "barrier() timed out after %g s: %s (barrier %d of this rank); this rank "
                "stays in it: call barrier() again to go on waiting"
                % (timeout, self._arrivals.missing(), pending.number), self._rank, self._host)
        self._pending = None
        if pending.error is not None:
            raise pending.error

    def place(self, first, count, homes):
        """Collective: move the homes of pages [first, first + count); with
        host-shared memory only a barrier."""
        self.check()
        self._not_pending()
        if self._homes_fixed:
            self._guarded(self._barrier, mismatch.describe())
            return
        self._guarded(lambda: _binding.place(first, count, homes), mismatch.describe())

    def bcast(self, value, root):
        self._root(root, "bcast")
        out = self._run("bcast", root, dumps(value) if root == self._rank else None,
                        mismatch.describe(root=root))
        return value if root == self._rank else loads(out, self._memory)

    def reduce(self, x, op, root, out=None):
        """x (a number, bool, complex, a list of them or a numpy array)
        combined elementwise over the ranks with op: the result at root
        (every rank for root=None), else None; written into out if given."""
        reductions.check_op(op)
        if root is not None:
            self._root(root, "reduce")
        arr = reductions.as_array(x)
        desc = mismatch.describe(op=op, root=root, dtype=_name(arr.dtype), shape=arr.shape)
        wire = reductions.in_core(arr, op)
        if wire is None:
            result = self._combine(self.gather(arr, None, desc), op)
            return None if root not in (None, self._rank) else reductions.like(result, x, out)
        send, finish = wire
        got = self._run("reduce", _binding.ROOT_ALL if root is None else root, send, desc,
                        op=op, dtype=_name(send.dtype))
        if got is None:
            return None
        return reductions.like(finish(reductions.from_bytes(got, send)), x, out)

    def gather(self, value, root, desc=None):
        """Every rank's value, in rank order, at root (every rank for
        root=None), else None."""
        if root is not None:
            self._root(root, "gather")
        desc = desc or mismatch.describe(root=root)
        out = self._run("gather", _binding.ROOT_ALL if root is None else root, dumps(value),
                        desc)
        return None if out is None else [loads(v, self._memory)
                                         for v in _entries(out, self._size)]

    # ------------------------------------------------------------ built on them
    def scatter(self, values, root):
        """values[r] (root's list of size values) to each rank r."""
        self._root(root, "scatter")
        problem = None
        if self._rank == root and (not isinstance(values, (list, tuple)) or
                                   len(values) != self._size):
            problem = "scatter needs a list of %d values at root %d, got %s" % (
                self._size, root, _what(values))
        sent = (problem, None if problem else values) if self._rank == root else None
        problem, values = self.bcast(sent, root)
        if problem:                     # on every rank, so that none waits
            raise ValueError(problem)
        return values[self._rank]

    def alltoall(self, values):
        """Rank r's values[q] goes to rank q, which gets the list of them by r."""
        lists = self.gather(values, None, mismatch.describe())
        bad = [r for r, v in enumerate(lists)
               if not isinstance(v, (list, tuple)) or len(v) != self._size]
        if bad:
            raise ValueError("alltoall needs a list of %d values from every rank; rank %d "
                             "passed %s" % (self._size, bad[0], _what(lists[bad[0]])))
        return [lists[r][self._rank] for r in range(self._size)]

    def scan(self, x, op, exclusive, out=None):
        """The combination of ranks 0 .. this one's x (inclusive), or of
        ranks 0 .. this one - 1 (exclusive: None on rank 0)."""
        reductions.check_op(op)
        arr = reductions.as_array(x)
        arrays = self.gather(arr, None, mismatch.describe(op=op, dtype=arr.dtype.name,
                                                          shape=arr.shape))
        upto = self._rank if exclusive else self._rank + 1
        return reductions.like(self._combine(arrays[:upto], op), x, out) if upto else None

    def reduce_scatter(self, x, op, counts, out):
        """allreduce of x, split along its first axis: block r to rank r
        (counts[r] rows, or as numpy.array_split)."""
        total = reductions.as_array(self.reduce(x, op, None))
        if total.ndim == 0:
            raise ValueError("reduce_scatter needs an array to split, got a scalar")
        if counts is None:
            counts = [len(b) for b in np.array_split(total, self._size)]
        elif len(counts) != self._size or sum(counts) != len(total):
            raise ValueError("reduce_scatter counts must be %d numbers summing to %d, got %r"
                             % (self._size, len(total), counts))
        first = sum(counts[:self._rank])
        return reductions.like(total[first:first + counts[self._rank]], total, out)

    def _combine(self, arrays, op):
        try:
            return reductions.combine(arrays, op)
        except TypeError:
            raise TypeError("op %r does not apply to %s" % (op, arrays[0].dtype)) from None

    def finalize(self):
        self.check()
        self._not_pending()
        with self._lock:
            if self._host_shared:
                _binding.host_finalizing()
            _binding.finalize()
        self.finalized = True


_NAMES = {}                         # dtype -> its name: numpy works it out each time


def _name(dtype):
    if dtype not in _NAMES:
        _NAMES[dtype] = dtype.name
    return _NAMES[dtype]


def _entries(out, size):
    """The values of a gather's bytes, in rank order."""
    values, at = {}, 0
    while at < len(out):
        rank, n = _ENTRY.unpack_from(out, at)
        at += _ENTRY.size
        values[rank] = out[at:at + n]
        at += n
    return [values[r] for r in range(size)]


def _what(values):
    return "%s of %d" % (type(values).__name__, len(values)) if hasattr(values, "__len__") \
        else type(values).__name__


class _Arrivals:
    """Who has entered the barriers called with a timeout: each rank posts
    its arrival to every other (mailbox key ARRIVED | rank), and a rank that
    times out counts the posts it got.  It costs N - 1 small messages per
    rank, so plain barriers do not count."""

    ARRIVED = 1 << 63               # no thread's key (libdsm.sync) has this bit

    def __init__(self, rank, size):
        self._rank, self._others = rank, [q for q in range(size) if q != rank]
        self._entered, self._seen = 0, dict.fromkeys(self._others, 0)

    def arrive(self):
        self._entered += 1
        for q in self._others:
            _binding.post(q, self.ARRIVED | self._rank)

    def missing(self):
        """Who has not arrived, said as a sentence part."""
        for q in self._others:
            while _binding.take(self.ARRIVED | q, 0):
                self._seen[q] += 1
        late = [q for q in self._others if self._seen[q] < self._entered]
        if not late:
            return "every rank that uses a timeout has arrived; one without has not"
        return "%s %s not arrived" % (mismatch.ranks(late), "has" if len(late) == 1 else "have")


class _Pending:
    """A barrier run by a thread of its own, so that the caller can stop
    waiting for it: `done` is set when it returns, `error` is what it raised."""

    def __init__(self, barrier, number):
        self.done, self.error, self.number = threading.Event(), None, number
        self._barrier = barrier
        threading.Thread(target=self._run, name="libdsm-barrier-%d" % number,
                         daemon=True).start()

    def _run(self):
        try:
            self._barrier()
        except Exception as e:      # handed to the caller's thread
            self.error = e
        self.done.set()
