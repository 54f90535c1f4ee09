"""Numpy arrays on shared pages: `dsm.array`, collective or by name.

A collective array is an Allocation that rank 0 makes and bcasts; this
module remembers it by offset so that `dsm.free(arr)` can give it back.  A
named array is a view of a named region, created by the first rank to ask.
Both start on a page boundary.
"""
import math

from libdsm.errors import CollectiveError


class Arrays:
    """This rank's arrays.  memory: the region's Memory; heap, regions and
    collectives: what arrays are made of; rank, host: for errors."""

    def __init__(self, memory, heap, regions, collectives, placement, rank, host):
        self._memory = memory
        self._placement = placement
        self._heap = heap
        self._regions = regions
        self._coll = collectives
        self._rank, self._host = rank, host
        self._allocations = {}          # offset -> Allocation of a collective array

    def array(self, shape, dtype, name=None, pad_rows=False, homes=None):
        """A numpy array of shape and dtype: collective without a name, else
        on the named region (see `Dsm.array`).  pad_rows: each row (index
        of the first axis) starts on a page boundary.  homes: where its
        pages live (libdsm.placement), for a collective array."""
        import numpy as np
        self._placement.check(homes, named=name is not None)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        row = math.prod(shape[1:]) * dtype.itemsize
        stride = -(-row // self._memory.page_size) * self._memory.page_size \
            if pad_rows and row else row
        nbytes = max(1, shape[0] * stride if shape else dtype.itemsize)
        if name is not None:
            return self._named(name, shape, dtype, nbytes, stride)
        made = None
        if self._rank == 0:
            made = (self._heap.malloc(nbytes, align=self._memory.page_size), shape, dtype.str,
                    stride)
        alloc, root_shape, root_dtype, root_stride = self._coll.bcast(made, root=0)
        if (root_shape, root_dtype, root_stride) != (shape, dtype.str, stride):
            raise CollectiveError("array(): this rank asked for %s %s (row stride %d), rank 0 "
                                  "for %s %s (row stride %d)"
                                  % (shape, dtype.str, stride, root_shape, root_dtype,
                                     root_stride), self._rank, self._host)
        self._allocations[alloc.offset] = alloc
        arr = _rows(alloc.mem, shape, dtype, count, stride)
        self._placement.array_made(arr, homes)
        return arr

    def _named(self, name, shape, dtype, nbytes, stride):
        try:
            self._regions.create(name, nbytes)
        except FileExistsError:
            pass
        region = self._regions.map(name)
        if region.size < nbytes:
            self._regions.unmap(region)
            raise ValueError("region %r has %d bytes, too few for %s of %s"
                             % (name, region.size, shape, dtype))
        return _rows(region.mem, shape, dtype, math.prod(shape), stride)

    def forget(self, arr):
        """The Allocation behind a collective array, which this rank stops
        tracking; ValueError if arr is not one."""
        addr = arr.__array_interface__["data"][0] if hasattr(arr, "__array_interface__") \
            else None
        if addr is None or addr - self._memory.base not in self._allocations:
            raise ValueError("free() takes an Allocation or an array from dsm.array()")
        return self._allocations.pop(addr - self._memory.base)


def _rows(mem, shape, dtype, count, stride):
    """The array of shape on mem, whose rows are stride bytes apart."""
    import numpy as np
    if len(shape) < 2 or stride == math.prod(shape[1:]) * dtype.itemsize:
        return np.frombuffer(mem, dtype=dtype, count=count).reshape(shape)
    inner = np.empty(shape[1:], dtype).strides         # C order within a row
    return np.ndarray(shape, dtype, buffer=mem, strides=(stride,) + inner)
