"""Numpy arrays on shared pages: `dsm.array`, collective or by name, and
their lifetime.

A collective array is an Allocation that rank 0 makes while every rank
waits; it starts zeroed.  It lives while any rank uses it: each rank watches the memory it
built its array on (a plain ndarray every view of the array keeps alive),
and when nothing of it is left on that rank, marks the allocation dead
there.  The next collective array() gathers every rank's dead set, and rank
0 frees what is dead on all of them before it allocates.  `dsm.free(arr)`,
or the end of ``with dsm.array(...) as arr:``, frees one at once; it is
collective too (every rank frees the same array, in the same order).
A named array is a view of a named region, created by the first rank to
ask; unmap_region and destroy_region govern it.  Both start on a page
boundary, and both are `SharedArray`s.
"""
from __future__ import annotations

import collections
import math
import operator
import weakref
from typing import Any

import numpy as np

from libdsm.errors import ArgumentError, CollectiveError, OutOfSpaceError


class SharedArray(np.ndarray):
    """A numpy array on the DSM region (or a view of one).

    It is an ndarray in every way; what differs: `tofile` (and so np.save
    to a real file) pins the pages while it writes, so the file gets the
    whole array; ``with dsm.array(...) as a:`` frees it at the end of the
    block, on every rank.  Results of arithmetic are plain ndarrays, and so
    are slices that are neither C- nor Fortran-contiguous (below).
    """
    _owner: Arrays | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self._owner = getattr(obj, "_owner", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        out = kw.get("out", ())
        if out:
            kw["out"] = tuple(map(_plain, out))
        result = getattr(ufunc, method)(*map(_plain, inputs), **kw)
        return result if not out else out[0] if len(out) == 1 else out     # a += 1 stays

    def __getitem__(self, key):
        # numpy reuses a temporary in place (a + b + c allocates once) only
        # when the other operand is an exact ndarray: a stencil over slices
        # of a subclass allocates, and faults in, a fresh temporary for
        # every operator (1.5-2x on Jacobi).  A slice that is not contiguous
        # can be plain: tofile and np.save copy such an array through user
        # space, where a fault is served, and no buffer-taking system call
        # accepts one; a contiguous slice keeps the pinning tofile.
        item = np.ndarray.__getitem__(self, key)
        if type(item) is SharedArray and not (item.flags.c_contiguous or item.flags.f_contiguous):
            return item.view(np.ndarray)
        return item

    def tofile(self, fid, sep="", format="%s"):     # noqa: A002  (numpy's name)
        """ndarray.tofile with the array's pages here for the whole write:
        a system call on DSM memory does not fault pages in."""
        plain = self.view(np.ndarray)
        if self._owner is None or not self._owner.on_region(plain):
            return plain.tofile(fid, sep, format)
        return self._owner.pins.tofile(plain, fid, sep, format)

    def __reduce__(self):
        return self.view(np.ndarray).__reduce__()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception the other ranks may not get here: leave it to GC.
        if exc_type is None and self._owner is not None:
            self._owner.free(self)


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, SharedArray) else x


def checked(shape: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    """shape as a tuple of ints and dtype as a numpy dtype, or an
    ArgumentError naming the one dsm.array() cannot take."""
    try:
        dims = (operator.index(shape),)
    except TypeError:
        try:
            dims = tuple(operator.index(n) for n in shape)
        except TypeError:
            raise ArgumentError("dsm.array(shape=%r): a shape is an int or a sequence of ints"
                                % (shape,)) from None
    if any(n < 0 for n in dims):
        raise ArgumentError("dsm.array(shape=%r): a dimension cannot be negative" % (shape,))
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ArgumentError("dsm.array(dtype=%r): not a numpy dtype (%s)" % (dtype, e)) from None
    if dt.hasobject or dt.itemsize == 0:
        raise ArgumentError("dsm.array(dtype=%r): takes a dtype of fixed-size values (numbers, "
                            "fixed-length strings, records of them), not %s"
                            % (dtype, "Python objects" if dt.hasobject else "one of size 0"))
    return dims, dt


class Arrays:
    """This rank's arrays.  memory: the region's Memory; heap, regions and
    collectives: what arrays are made of; pins: libdsm.pinned.Pins, for
    tofile; prefetch(obj, write): Dsm.prefetch; rank, host: for errors."""

    def __init__(self, memory, heap, regions, collectives, placement, pins, prefetch, rank,
                 host):
        self._memory = memory
        self._placement = placement
        self._heap = heap
        self._regions = regions
        self._coll = collectives
        self.pins = pins
        self._prefetch = prefetch
        self._rank, self._host = rank, host
        self._live = {}             # offset -> (Allocation, weakref.finalize) of our arrays
        self._dropped = collections.deque()     # offsets GC found unused here (any thread)
        self._dead = {}             # offset -> Allocation: unused here, not yet freed

    def array(self, shape, dtype, name=None, pad_rows=False, homes=None):
        """A SharedArray of shape and dtype: collective without a name, else
        on the named region (see `Dsm.array`).  pad_rows: each row (index
        of the first axis) starts on a page boundary.  homes: where its
        pages live (libdsm.placement), for a collective array."""
        shape, dtype = checked(shape, dtype)
        self._placement.check(homes, named=name is not None)
        row = math.prod(shape[1:]) * dtype.itemsize
        stride = -(-row // self._memory.page_size) * self._memory.page_size \
            if pad_rows and row else row
        nbytes = max(1, shape[0] * stride if shape else dtype.itemsize)
        if name is not None:
            return self._named(name, shape, dtype, nbytes, stride)
        alloc = self._collective(shape, dtype, stride, nbytes)
        owner = np.frombuffer(alloc.mem, np.uint8)
        done = weakref.finalize(owner, self._dropped.append, alloc.offset)
        done.atexit = False
        self._live[alloc.offset] = alloc, done
        arr = self._wrap(owner, shape, dtype, stride)
        self._placement.array_made(arr, homes)
        return arr

    def _collective(self, shape, dtype, stride, nbytes):
        """The Allocation every rank agrees on: gather what each asks and
        what it no longer uses; rank 0 frees what no rank uses, allocates,
        and sends the outcome to all."""
        while self._dropped:
            offset = self._dropped.popleft()
            self._dead[offset] = self._live.pop(offset)[0]
        asked = (shape, dtype.str, stride)
        every = self._coll.gather((asked, sorted(self._dead)), root=0)
        outcome = self._allocate(every, nbytes) if self._rank == 0 else None
        freed, alloc, error = self._coll.bcast(outcome, root=0)
        for offset in freed:
            del self._dead[offset]
        if error is not None:
            kind, text = error
            raise (CollectiveError if kind == "mismatch" else OutOfSpaceError)(
                text, self._rank, self._host)
        return alloc

    def _allocate(self, every, nbytes):
        """Rank 0's part of _collective: (offsets freed, the Allocation or
        None, None or (kind, message))."""
        asked = every[0][0]
        for r, (theirs, _) in enumerate(every):
            if theirs != asked:
                return [], None, ("mismatch", "array(): rank %d asked for %s %s (row stride "
                                  "%d), rank 0 for %s %s (row stride %d)" % (r, *theirs, *asked))
        unused = sorted(set.intersection(*(set(dead) for _, dead in every)))
        for offset in unused:
            self._give_back(self._dead[offset])
        try:
            return unused, self._heap.malloc(nbytes, align=self._memory.page_size), None
        except MemoryError as e:          # OutOfSpaceError, or the heap's free list is full
            return unused, None, ("space", "array(shape=%s, dtype=%s): %s"
                                  % (asked[0], np.dtype(asked[1]), e))

    def free(self, arr):
        """Collective: every rank frees the same collective array; rank 0
        gives its memory back."""
        offset = self._offset_of(arr)
        try:
            every = self._coll.gather(offset, root=None)
        except CollectiveError as e:
            raise CollectiveError("free() of an array is collective: every rank calls "
                                  "dsm.free(arr) on it, in the same order (a free on one "
                                  "rank is for dsm.malloc's Allocations); %s" % e.what,
                                  self._rank, self._host) from None
        others = [r for r, o in enumerate(every) if o != offset]
        if others:
            raise CollectiveError("free(): this rank freed the array at offset %d, rank %d the "
                                  "one at %d" % (offset, others[0], every[others[0]]),
                                  self._rank, self._host)
        alloc, done = self._live.pop(offset)
        done.detach()
        if self._rank == 0:
            self._give_back(alloc)

    def _give_back(self, alloc):
        """Rank 0: zero an array's memory, as a new array starts zeroed like
        the region, and free it.  Its pages come here in bulk first."""
        view = np.frombuffer(alloc.mem, np.uint8)
        self._prefetch(view, True)
        view[:] = 0
        self._heap.free(alloc)

    def _offset_of(self, arr):
        """The offset of a live collective array of ours; ValueError else."""
        addr = arr.__array_interface__["data"][0] if hasattr(arr, "__array_interface__") \
            else None
        offset = None if addr is None else addr - self._memory.base
        if offset not in self._live:
            raise ValueError("free() takes an Allocation from dsm.malloc, or an array from "
                             "dsm.array() without a name (the array itself, not a view; "
                             "once), got %s" % type(arr).__name__)
        return offset

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
        return self._wrap(region.view(np.ndarray), shape, dtype, stride)

    def _wrap(self, owner, shape, dtype, stride):
        """The SharedArray of shape on owner (uint8), rows stride bytes apart."""
        count = math.prod(shape)
        if len(shape) < 2 or stride == math.prod(shape[1:]) * dtype.itemsize:
            arr = owner[:count * dtype.itemsize].view(dtype).reshape(shape)
        else:
            inner = np.empty(shape[1:], dtype).strides         # C order within a row
            arr = np.ndarray(shape, dtype, buffer=owner, strides=(stride,) + inner)
        arr = arr.view(SharedArray)
        arr._owner = self
        return arr

    def on_region(self, arr):
        """Whether a numpy array's memory lies on the region."""
        start = arr.__array_interface__["data"][0] - self._memory.base
        return 0 <= start < self._memory.nbytes
