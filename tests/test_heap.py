"""The heap allocator alone, on ordinary memory with a thread lock."""
import threading

import pytest

from libdsm.alloc import GRANULE, Allocation, Heap


@pytest.fixture
def heap():
    return Heap(memoryview(bytearray(64 * 1024)), 1 << 20, threading.Lock())


def test_small_allocations_pack_together(heap):
    a, b = heap.malloc(10), heap.malloc(10)
    assert (a.offset, b.offset) == (0, GRANULE)


def test_alignment_is_honoured(heap):
    heap.malloc(1)
    a = heap.malloc(100, align=4096)
    assert a.offset == 4096
    assert heap.malloc(1).offset == GRANULE     # the gap before it is still free


def test_free_merges_neighbours_back_into_one_extent(heap):
    allocs = [heap.malloc(100) for _ in range(10)]
    for a in allocs[::2] + allocs[1::2]:
        heap.free(a)
    assert heap.usage() == (1 << 20, 1 << 20, 1)


def test_exhaustion_names_the_sizes(heap):
    heap.malloc(1 << 19)
    with pytest.raises(MemoryError, match=r"cannot allocate 786432 bytes .* 524288 bytes free"):
        heap.malloc(3 << 18)


def test_double_free_and_bad_arguments(heap):
    a = heap.malloc(32)
    heap.free(a)
    with pytest.raises(ValueError, match="not allocated"):
        heap.free(a)
    with pytest.raises(ValueError, match="outside the heap"):
        heap.free(Allocation(1 << 20, 16))
    with pytest.raises(ValueError, match="positive"):
        heap.malloc(0)
    with pytest.raises(ValueError, match="power of two"):
        heap.malloc(8, align=24)


def test_free_list_capacity_is_an_error_not_corruption():
    heap = Heap(memoryview(bytearray(16 + 4 * 16)), 1 << 20, threading.Lock())
    allocs = [heap.malloc(16) for _ in range(8)]
    heap.free(allocs[0])
    heap.free(allocs[2])
    heap.free(allocs[4])        # 4 extents: the capacity
    with pytest.raises(MemoryError, match="free list is full"):
        heap.free(allocs[6])
    assert heap.usage()[2] == 4


def test_allocation_pickles():
    import pickle
    a = Allocation(4096, 100)
    assert pickle.loads(pickle.dumps(a)) == a
