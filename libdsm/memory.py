"""The user's region as this process sees it: its address and a writable view.

One `Memory` is made at init and handed down to what lives on the region:
the heap binds the Allocations it returns to it, a Region slices its view
from it, bcast binds the Allocations it receives to it.  Nothing looks it
up; it is always passed down, so the modules below `libdsm` never import
the package.  It knows addresses and pages, not what is stored there.
"""


class Memory:
    """`mem`, a writable memoryview of nbytes at address `base`, in pages
    of page_size bytes."""

    def __init__(self, base, mem, page_size):
        self.base = base
        self.mem = mem
        self.nbytes = len(mem)
        self.page_size = page_size

    def _check(self, offset, nbytes):
        if offset < 0 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError("%r is not inside the region" % ((offset, nbytes),))

    def view(self, offset, nbytes):
        """A writable memoryview of nbytes at offset."""
        self._check(offset, nbytes)
        return self.mem[offset:offset + nbytes]

    def address(self, offset):
        """The virtual address of an offset: the same in every rank."""
        return self.base + offset

    def page_of(self, offset):
        """The page number holding a byte offset."""
        if not 0 <= offset < self.nbytes:
            raise ValueError("offset %d outside the region of %d bytes" % (offset, self.nbytes))
        return offset // self.page_size

    def pages(self, offset, nbytes):
        """(first page, number of pages) under nbytes at offset; (first, 0)
        when nbytes is 0."""
        self._check(offset, nbytes)
        first = offset // self.page_size
        return first, (-(-(offset + nbytes) // self.page_size) - first) if nbytes else 0

    def array_span(self, arr):
        """(offset, nbytes) of the memory a numpy array on the region spans,
        whatever its strides; (its start, 0) when it is empty."""
        lo = hi = arr.__array_interface__["data"][0]
        if not arr.size:
            return lo - self.base, 0
        for n, stride in zip(arr.shape, arr.strides):
            lo, hi = lo + min(0, (n - 1) * stride), hi + max(0, (n - 1) * stride)
        return lo - self.base, hi + arr.itemsize - lo

    def span(self, obj):
        """(offset, nbytes) of something on the region: an Allocation (its
        offset and nbytes), a Region, an array or memoryview on the region,
        or an (offset, nbytes) tuple."""
        if isinstance(obj, tuple):
            return obj
        if hasattr(obj, "__array_interface__"):
            return self.array_span(obj)
        if isinstance(obj, memoryview):
            import numpy as np
            return self.array_span(np.asarray(obj))
        if isinstance(getattr(obj, "offset", None), int) and hasattr(obj, "nbytes"):
            return obj.offset, obj.nbytes
        raise TypeError("expected an Allocation, a Region, an array, a memoryview or "
                        "(offset, nbytes), got %s" % type(obj).__name__)
