"""The named-region table and the system area's layout, on ordinary memory
with thread locks: the logic behind create/map/destroy and libdsm.sysv
without ranks."""
import collections
import threading

import pytest

from libdsm import layout
from libdsm.memory import Memory
from libdsm.regions import TABLE_BYTES

pytestmark = pytest.mark.timeout(30)
BASE = 0x7000_0000
PAGE = 4096


@pytest.fixture
def parts():
    """(memory, heap, regions) of a 64-page region."""
    memory = Memory(BASE, memoryview(bytearray(64 * PAGE)), PAGE)
    locks = collections.defaultdict(threading.Lock)
    heap, regions = layout.open_system_area(memoryview(bytearray(layout.SYS_BYTES)), memory,
                                            locks.__getitem__, rank=3)
    return memory, heap, regions


def test_the_system_area_holds_the_heap_and_the_table():
    assert layout.HEAP_META_BYTES + TABLE_BYTES <= layout.SYS_BYTES
    assert layout.mapped_bytes(1 << 20) == (1 << 20) + layout.SYS_BYTES
    assert layout.core_locks(10) == 10 + layout.SYS_LOCKS


def test_a_mapping_is_a_view_of_the_memory(parts):
    memory, heap, regions = parts
    shmid = regions.create("r", 100)
    a, b = regions.map("r"), regions.map_id(shmid)
    a.mem[:4] = b"data"
    assert bytes(b.mem[:4]) == b"data"
    assert bytes(memory.mem[a.offset:a.offset + 4]) == b"data"
    assert a.address == BASE + a.offset and a.offset % PAGE == 0
    assert regions.entries() == [("r", shmid, 100, 2)]
    st = regions.stat(shmid)
    assert (st.size, st.refcount, st.creator, st.offset) == (100, 2, 3, a.offset)


def test_destroy_waits_for_the_last_unmap(parts):
    memory, heap, regions = parts
    free_before = heap.usage()[0]
    regions.create("r", 100)
    region = regions.map("r")
    with pytest.raises(ValueError, match="still mapped by this rank"):
        regions.destroy("r")
    assert regions.remove(region.shmid) is False          # IPC_RMID: the name goes now
    assert regions.entries() == []
    regions.create("r", 50)                              # and can be taken again
    regions.unmap(region)                                # the old memory goes now
    assert not region.mapped
    assert regions.destroy("r") is True
    assert heap.usage()[0] == free_before
    with pytest.raises(FileNotFoundError):
        regions.stat(region.shmid)


def test_auto_remove_frees_at_the_last_unmap(parts):
    memory, heap, regions = parts
    free_before = heap.usage()[0]
    shmid = regions.create("auto", 10)
    region = regions.map_id(shmid)
    regions.auto_remove(shmid)
    assert [e[0] for e in regions.entries()] == ["auto"]   # the name stays until then
    regions.unmap(region)
    assert regions.entries() == [] and heap.usage()[0] == free_before


def test_get_is_shmget(parts):
    memory, heap, regions = parts
    shmid = regions.get("k", 100, create=True, exclusive=False)
    assert regions.get("k", 50, create=False, exclusive=False) == shmid
    with pytest.raises(FileExistsError):
        regions.get("k", 100, create=True, exclusive=True)
    with pytest.raises(ValueError, match="fewer than the 200 asked"):
        regions.get("k", 200, create=False, exclusive=False)
    with pytest.raises(FileNotFoundError):
        regions.get("other", 1, create=False, exclusive=False)
