"""Collectives and the DSM's lifecycle: barrier, bcast, allreduce, reduce,
gather, allgather, finalize, and the check every entry point makes (not
finalized, SIGSEGV handler still ours).  The C comm threads run them in
O(log N) exchanges (libdsm/csrc/coll.h); ranks that call different
collectives, or pass different shapes, all get a CollectiveError.

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
import zlib

from libdsm import _binding
from libdsm.alloc import Allocation
from libdsm.errors import BarrierTimeoutError, CollectiveError, StateError

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
    Allocations are bound to; rank and host name this rank in errors."""

    def __init__(self, memory, rank, size, host):
        self._memory = memory
        self._rank, self._size, self._host = rank, size, host
        self._lock = threading.Lock()
        self.finalized = False
        self._barriers = 0                  # barriers this rank entered
        self._pending = None                # a barrier that timed out, still entered

    def check(self):
        """Raise StateError after finalize; put our SIGSEGV handler back if
        something displaced it."""
        if self.finalized:
            raise StateError("the DSM was finalized", self._rank, self._host)
        _binding.ensure_handler()

    def barrier(self, timeout=None):
        """Wait until every rank called barrier().  Past timeout seconds,
        BarrierTimeoutError; this rank then stays in that barrier, and its
        next barrier() call goes on waiting for it (other collectives raise
        CollectiveError until it completes)."""
        self.check()
        if timeout is None and self._pending is None:
            with self._lock:
                self._barriers += 1
                _binding.barrier()
            return
        if timeout is not None and not timeout >= 0:
            raise ValueError("barrier timeout must be a number of seconds >= 0, got %r"
                             % (timeout,))
        if self._pending is None:
            self._barriers += 1
            self._pending = _Pending(self._lock, _binding.barrier, self._barriers)
        pending = self._pending
        if not pending.done.wait(timeout):
            raise BarrierTimeoutError(
                "barrier() timed out after %g s: not every rank has called it (barrier %d "
                "of this rank); this rank stays in it: call barrier() again to go on "
                "waiting" % (timeout, pending.number), self._rank, self._host)
        self._pending = None
        if pending.error is not None:
            raise pending.error

    def _not_pending(self):
        if self._pending is not None:
            raise CollectiveError("a barrier that timed out is still pending on this rank "
                                  "(barrier %d): call barrier() to finish it first"
                                  % self._pending.number, self._rank, self._host)

    def place(self, first, count, homes):
        """Collective: move the homes of pages [first, first + count)."""
        self.check()
        self._not_pending()
        with self._lock:
            _binding.place(first, count, homes)

    def _root(self, root, what):
        if not isinstance(root, int) or not 0 <= root < self._size:
            raise ValueError("%s root %r out of range 0..%d" % (what, root, self._size - 1))

    def _run(self, kind, root, data=None, **kw):
        self.check()
        self._not_pending()
        with self._lock:
            return _binding.collective(kind, root, data, **kw)

    def bcast(self, value, root):
        self._root(root, "bcast")
        out = self._run("bcast", root, dumps(value) if root == self._rank else None)
        return value if root == self._rank else loads(out, self._memory)

    def reduce(self, x, op, root):
        """x (a number or a numpy array) combined elementwise over the ranks
        with op: the result at root (every rank for root=None), else None."""
        import numpy as np
        if op not in _binding.OPS:
            raise ValueError("op must be one of %s, got %r" % (", ".join(_binding.OPS), op))
        if root is not None:
            self._root(root, "reduce")
        arr = np.asarray(x)             # (ascontiguousarray would make a 0-d array 1-d)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype.name not in _binding.DTYPES:
            raise TypeError("reduce takes numbers or arrays of %s, got %s"
                            % (", ".join(_binding.DTYPES), arr.dtype))
        shape = zlib.crc32(repr((arr.dtype.name, arr.shape)).encode())
        out = self._run("reduce", _binding.ROOT_ALL if root is None else root, arr, op=op,
                        dtype=arr.dtype.name, sig=shape)
        if out is None:
            return None
        result = np.frombuffer(out, dtype=arr.dtype).reshape(arr.shape).copy()
        if isinstance(x, np.ndarray):
            return result
        return result[()] if isinstance(x, np.generic) else result.item()

    def gather(self, value, root):
        """Every rank's value, in rank order, at root (every rank for
        root=None), else None."""
        if root is not None:
            self._root(root, "gather")
        out = self._run("gather", _binding.ROOT_ALL if root is None else root, dumps(value))
        if out is None:
            return None
        values, at = {}, 0
        while at < len(out):
            rank, n = _ENTRY.unpack_from(out, at)
            at += _ENTRY.size
            values[rank] = loads(out[at:at + n], self._memory)
            at += n
        return [values[r] for r in range(self._size)]

    def finalize(self):
        self.check()
        self._not_pending()
        with self._lock:
            _binding.finalize()
        self.finalized = True


class _Pending:
    """A barrier run by a thread of its own, holding `lock`, so that the
    caller can stop waiting for it: `done` is set when it returns, `error`
    is what it raised."""

    def __init__(self, lock, barrier, number):
        self.done, self.error, self.number = threading.Event(), None, number
        self._lock, self._barrier = lock, barrier
        threading.Thread(target=self._run, name="libdsm-barrier-%d" % number,
                         daemon=True).start()

    def _run(self):
        try:
            with self._lock:
                self._barrier()
        except Exception as e:      # handed to the caller's thread
            self.error = e
        self.done.set()
