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
from libdsm.errors import StateError

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

    def check(self):
        """Raise StateError after finalize; put our SIGSEGV handler back if
        something displaced it."""
        if self.finalized:
            raise StateError("the DSM was finalized", self._rank, self._host)
        _binding.ensure_handler()

    def barrier(self):
        self.check()
        with self._lock:
            _binding.barrier()

    def place(self, first, count, homes):
        """Collective: move the homes of pages [first, first + count)."""
        self.check()
        with self._lock:
            _binding.place(first, count, homes)

    def _root(self, root, what):
        if not isinstance(root, int) or not 0 <= root < self._size:
            raise ValueError("%s root %r out of range 0..%d" % (what, root, self._size - 1))

    def _run(self, kind, root, data=None, **kw):
        self.check()
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
        with self._lock:
            _binding.finalize()
        self.finalized = True
