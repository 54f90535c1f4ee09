"""The layout of what each rank maps: the user's region, then the system area.

The system area follows the user's region: the heap's free list and the
named-region table live there, each guarded by system locks numbered past
the user's (see libdsm.locks.Locks).  The C core maps and counts both;
only the user's region is the Memory the heap hands out.
"""
from libdsm.alloc import Heap
from libdsm.regions import BUCKETS, TABLE_BYTES, Regions, Table

SYS_BYTES = 256 << 10
HEAP_META_BYTES = 128 << 10
HEAP_LOCK = 0
REGION_LOCKS = 1                # bucket b uses system lock REGION_LOCKS + b
SYS_LOCKS = REGION_LOCKS + BUCKETS


def mapped_bytes(size):
    """What the core maps for a user's region of size bytes."""
    return size + SYS_BYTES


def core_locks(nlocks):
    """How many locks the core keeps for nlocks user locks."""
    return nlocks + SYS_LOCKS


def open_system_area(sys_mem, memory, system_lock, rank):
    """The heap over `memory` and this rank's Regions, both kept in sys_mem
    (SYS_BYTES of the system area).  system_lock(k) gives system lock k."""
    heap = Heap(sys_mem[:HEAP_META_BYTES], memory, system_lock(HEAP_LOCK))
    table = Table(sys_mem[HEAP_META_BYTES:HEAP_META_BYTES + TABLE_BYTES], heap,
                  lambda b: system_lock(REGION_LOCKS + b), memory.page_size, rank)
    return heap, Regions(table, memory)
