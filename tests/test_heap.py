"""The heap allocator alone, on ordinary memory with a thread lock."""
import threading

import pytest

from libdsm.alloc import GRANULE, Allocation, Heap
from libdsm.errors import OutOfSpaceError, StateError
from libdsm.memory import Memory

pytestmark = pytest.mark.timeout(30)
BASE = 0x7000_0000


def memory(nbytes=1 << 20):
    return Memory(BASE, memoryview(bytearray(nbytes)), 4096)


@pytest.fixture
def heap():
    return Heap(memoryview(bytearray(64 * 1024)), memory(), threading.Lock())


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
    with pytest.raises(OutOfSpaceError, match=r"cannot allocate 786432 bytes \(768 KiB, alignment "
                       r"16\): the region has 1048576 bytes \(1 MiB\), 524288 in use, 524288 "
                       r"bytes free, the largest free block 524288 \(512 KiB\); raise DSM_SIZE "
                       r"or pass a larger size= to libdsm.init\(\), e.g. size=\"3M\""):
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
    heap = Heap(memoryview(bytearray(16 + 4 * 16)), memory(), threading.Lock())
    allocs = [heap.malloc(16) for _ in range(8)]
    heap.free(allocs[0])
    heap.free(allocs[2])
    heap.free(allocs[4])        # 4 extents: the capacity
    with pytest.raises(MemoryError, match="free list is full"):
        heap.free(allocs[6])
    assert heap.usage()[2] == 4


def test_allocation_pickles_as_offset_and_size_only(heap):
    import pickle
    a = heap.malloc(100)
    b = pickle.loads(pickle.dumps(a))
    assert b == a
    with pytest.raises(StateError, match="has no .mem"):
        b.mem


def test_malloc_binds_allocations_to_the_memory():
    region = memory()
    heap = Heap(memoryview(bytearray(1024)), region, threading.Lock())
    heap.malloc(20)
    a = heap.malloc(5)
    a.mem[:] = b"hello"
    assert bytes(region.mem[GRANULE * 2:GRANULE * 2 + 5]) == b"hello"
    assert a.address == BASE + 2 * GRANULE
    assert len(a.mem) == 5


def test_copies_keep_the_binding(heap):
    import copy
    a = heap.malloc(8)
    a.mem[:] = b"12345678"
    assert bytes(copy.copy(a).mem) == bytes(copy.deepcopy([a])[0].mem) == b"12345678"


def test_an_allocation_made_by_hand_says_how_to_reach_its_bytes():
    with pytest.raises(StateError, match="slice dsm.mem"):
        Allocation(0, 16).address
