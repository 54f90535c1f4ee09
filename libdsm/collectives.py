"""Collectives and the DSM's lifecycle: barrier, bcast, finalize, and the
check every entry point makes (not finalized, SIGSEGV handler still ours).

bcast pickles its value with each Allocation as a persistent ID (pickle's
way to refer to objects outside the stream): only (offset, nbytes) travel,
and the receiving rank binds them to its own Memory.  So an Allocation
arrives with a working `.mem` however deep in the value it sits, and
nothing has to look the Memory up.
"""
import io
import pickle
import threading

from libdsm import _binding
from libdsm.alloc import Allocation
from libdsm.errors import StateError


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

    def bcast(self, value, root):
        self.check()
        if not isinstance(root, int) or not 0 <= root < self._size:
            raise ValueError("bcast root %r out of range 0..%d" % (root, self._size - 1))
        data = dumps(value) if root == self._rank else None
        with self._lock:
            out = _binding.bcast(root, data)
        return value if root == self._rank else loads(out, self._memory)

    def finalize(self):
        self.check()
        with self._lock:
            _binding.finalize()
        self.finalized = True
