"""Each rank's checkpoint state, pickled, with the allocations and arrays
on the region saved as references (their bytes are in the region's parts)."""
import io
import pickle

from libdsm.alloc import Allocation


class _Pickler(pickle.Pickler):
    """Allocations and arrays on the region travel as references, not bytes."""

    def __init__(self, out, memory):
        super().__init__(out, pickle.HIGHEST_PROTOCOL)
        self._memory = memory

    def persistent_id(self, obj):
        if isinstance(obj, Allocation):
            return ("alloc", obj.offset, obj.nbytes)
        face = getattr(obj, "__array_interface__", None)
        if face is None or not hasattr(obj, "strides"):
            return None
        offset = face["data"][0] - self._memory.base
        if 0 <= offset < self._memory.nbytes:
            return ("array", offset, obj.shape, obj.dtype.str, obj.strides)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, memory):
        super().__init__(io.BytesIO(data))
        self._memory = memory

    def persistent_load(self, pid):
        if pid[0] == "alloc":
            return Allocation(pid[1], pid[2], self._memory)
        import numpy as np
        _, offset, shape, dtype, strides = pid
        return np.ndarray(shape, dtype, buffer=self._memory.mem, offset=offset, strides=strides)


def dumps_state(state, memory):
    out = io.BytesIO()
    _Pickler(out, memory).dump(state)
    return out.getvalue()


def loads_state(data, memory):
    return _Unpickler(data, memory).load()
