"""Named shared regions and the table behind them.

A region is a page-aligned piece of the heap with a name, a size and a
count of mappings across all ranks.  Its entry lives in a table in the
system area: the name hashes to one of BUCKETS buckets, and each bucket is
guarded by its own DSM lock, whose home rank (lock % size) is therefore
chosen by the name, round-robin style.  Every operation on an entry holds
that lock, so it is atomic across ranks; the heap's lock is only ever taken
inside a bucket's, never the other way round.

Destroy semantics, as IPC_RMID: destroying a region that is still mapped
somewhere hides its name at once (it can be created anew) and frees its
memory when the last mapping anywhere is dropped.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import numpy.typing as npt

BUCKETS = 64
SLOTS = 8                       # entries per bucket
NAME_BYTES = 64
# state, flags, generation, offset, size, refcount, creator, key, pad, name
_ENTRY = struct.Struct("<IIQQQQIi16x%ds" % NAME_BYTES)
TABLE_BYTES = BUCKETS * SLOTS * _ENTRY.size

FREE, LIVE, REMOVED = 0, 1, 2
AUTO_REMOVE, PRIVATE = 1, 2     # flags


class Entry:
    """One table entry, as read under its bucket's lock."""
    __slots__ = ("slot", "state", "flags", "generation", "offset", "size", "refcount",
                 "creator", "key", "name")

    def __init__(self, slot, fields):
        self.slot = slot
        (self.state, self.flags, self.generation, self.offset, self.size, self.refcount,
         self.creator, self.key, name) = fields
        self.name = name.rstrip(b"\0").decode()

    @property
    def shmid(self):
        return self.generation << 16 | self.slot


class Region(np.ndarray):
    """One mapping of a named region: the same address on every rank.

    It is also the region's bytes, as a writable uint8 array, so that
    ``memoryview(region)``, ``np.asarray(region)`` and anything taking a
    buffer work on every Python (a class of plain Python can only offer a
    buffer from 3.12 on, through __buffer__).  It compares as a uint8
    array does, elementwise (``np.all(region == 0)``); which mapping it is,
    `is` says.  As an object it stays one mapping: true, hashable by
    identity; slices, comparisons and arithmetic give plain arrays."""
    name: str
    shmid: int
    offset: int
    address: int
    mem: memoryview
    mapped: bool

    def __new__(cls, entry, memory):
        self = super().__new__(cls, (entry.size,), np.uint8,
                               buffer=memory.view(entry.offset, entry.size))
        self.name = entry.name
        self.shmid = entry.shmid
        self.offset = entry.offset
        self.address = memory.address(entry.offset)
        self.mem = memory.view(entry.offset, entry.size)
        """A writable memoryview of the region."""
        self.mapped = True
        return self

    def array(self, dtype: npt.DTypeLike = "uint8",
              shape: int | tuple[int, ...] | None = None) -> np.ndarray:
        """A numpy view of the region (all of it by default)."""
        dtype = np.dtype(dtype)
        count = -1 if shape is None else int(np.prod(shape))
        arr = np.frombuffer(self.mem, dtype=dtype, count=count)
        return arr if shape is None else arr.reshape(shape)

    def contains(self, address: int) -> bool:
        """Whether a byte address lies in this mapping's memory."""
        start = self.__array_interface__["data"][0]
        return start <= address < start + max(1, self.size)

    # One mapping as an object; its bytes as plain arrays.
    __hash__ = object.__hash__

    def __bool__(self):
        return True

    def __getitem__(self, key):
        return self.view(np.ndarray)[key]

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        plain = tuple(x.view(np.ndarray) if isinstance(x, Region) else x for x in inputs)
        if "out" in kw:
            kw["out"] = tuple(x.view(np.ndarray) if isinstance(x, Region) else x
                              for x in kw["out"])
        return getattr(ufunc, method)(*plain, **kw)

    def __reduce__(self):
        raise TypeError("a Region is one rank's mapping and cannot be pickled; send its "
                        "name or shmid")

    def __repr__(self):
        return "<Region %r shmid=%d size=%d at %#x%s>" % (
            self.name, self.shmid, self.size, self.address, "" if self.mapped else " unmapped")

    __str__ = __repr__


def bucket_of(name):
    """The bucket (and so the lock and its home) a name belongs to."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "little") \
        % BUCKETS


class Table:
    """The region table in shared memory.

    `mem` is the table's memoryview, `heap` allocates the regions' memory,
    `lock(b)` gives bucket b's DSM lock.
    """

    def __init__(self, mem, heap, lock, page_size, rank):
        self._mem = mem
        self._heap = heap
        self._lock = lock
        self._page_size = page_size
        self._rank = rank

    def _read(self, slot):
        return Entry(slot, _ENTRY.unpack_from(self._mem, slot * _ENTRY.size))

    def _write(self, e):
        _ENTRY.pack_into(self._mem, e.slot * _ENTRY.size, e.state, e.flags, e.generation,
                         e.offset, e.size, e.refcount, e.creator, e.key,
                         e.name.encode())

    def _bucket_slots(self, bucket):
        return range(bucket * SLOTS, (bucket + 1) * SLOTS)

    def _find(self, bucket, name):
        for slot in self._bucket_slots(bucket):
            e = self._read(slot)
            if e.state == LIVE and e.name == name:
                return e
        return None

    def locked(self, bucket):
        return self._lock(bucket)

    @staticmethod
    def check_name(name):
        if not isinstance(name, str) or not name or len(name.encode()) > NAME_BYTES:
            raise ValueError("a region name is a non-empty str of at most %d UTF-8 bytes, "
                             "got %r" % (NAME_BYTES, name))

    def lookup(self, name):
        """The live entry called name, or None (caller holds the bucket lock)."""
        return self._find(bucket_of(name), name)

    def create(self, name, size, key=0, flags=0):
        """Add a live entry and its memory (caller holds the bucket lock).
        FileExistsError, MemoryError."""
        if not isinstance(size, int) or size <= 0:
            raise ValueError("a region needs a positive size, got %r" % (size,))
        bucket = bucket_of(name)
        if self._find(bucket, name):
            raise FileExistsError("a region named %r already exists" % name)
        free = [s for s in self._bucket_slots(bucket) if self._read(s).state == FREE]
        if not free:
            raise MemoryError("no room for region %r: its table bucket holds %d regions "
                              "already" % (name, SLOTS))
        alloc = self._heap.malloc(size, align=self._page_size)
        e = self._read(free[0])
        e.state, e.flags, e.generation = LIVE, flags, e.generation + 1
        e.offset, e.size, e.refcount, e.creator, e.key, e.name = (
            alloc.offset, size, 0, self._rank, key, name)
        self._write(e)
        return e

    @staticmethod
    def locate(shmid):
        """(bucket, slot, generation) of a region id; ValueError if malformed."""
        if not isinstance(shmid, int) or shmid < 0 or (shmid & 0xFFFF) >= BUCKETS * SLOTS:
            raise ValueError("%r is not a region id" % (shmid,))
        return (shmid & 0xFFFF) // SLOTS, shmid & 0xFFFF, shmid >> 16

    def read_if(self, slot, generation):
        """The entry in slot if it still has this generation and is in use."""
        e = self._read(slot)
        return e if e.generation == generation and e.state != FREE else None

    def attach(self, e):
        e.refcount += 1
        self._write(e)

    def detach(self, e):
        """Drop one mapping; free the region if it was the last of a removed
        (or auto-removing) one.  Returns True if freed."""
        e.refcount -= 1
        if e.refcount == 0 and (e.state == REMOVED or e.flags & AUTO_REMOVE):
            self._release(e)
            return True
        self._write(e)
        return False

    def auto_remove(self, e):
        """IPC_AUTORMID: free at the last detach; the name stays until then."""
        e.flags |= AUTO_REMOVE
        self._write(e)

    def remove(self, e):
        """IPC_RMID: hide the name now, free at the last detach."""
        if e.refcount == 0:
            self._release(e)
            return True
        e.state = REMOVED
        self._write(e)
        return False

    def _release(self, e):
        from libdsm.alloc import Allocation
        self._heap.free(Allocation(e.offset, e.size))
        e.state, e.refcount, e.name = FREE, 0, ""
        self._write(e)

    def entries(self):
        """Every live entry (a snapshot, read without locks)."""
        return [e for e in map(self._read, range(BUCKETS * SLOTS)) if e.state == LIVE]


class Regions:
    """This rank's side of the named regions: the table plus the mappings
    this rank holds.  Behind `Dsm.create_region` & co. and, through
    `Dsm.named_regions`, `libdsm.sysv`: its public methods are the whole
    interface, and the Table stays inside it.  `memory` is the
    region's libdsm.memory.Memory, which mappings are views of."""

    def __init__(self, table, memory):
        self._table = table
        self._memory = memory
        self._mapped = {}           # id(Region) -> Region, this rank's live mappings

    def create(self, name, size, key=0, flags=0):
        """Create a region; its id.  FileExistsError, MemoryError."""
        Table.check_name(name)
        with self._table.locked(bucket_of(name)):
            return self._table.create(name, size, key, flags).shmid

    def get(self, name, size, create, exclusive, key=0, flags=0):
        """shmget's lookup-or-create, atomic under the name's lock; the id.
        FileExistsError, FileNotFoundError, ValueError (size), MemoryError."""
        Table.check_name(name)
        with self._table.locked(bucket_of(name)):
            e = self._table.lookup(name)
            if e is not None:
                if create and exclusive:
                    raise FileExistsError("segment %s exists" % name)
                if size > e.size:
                    raise ValueError("segment %s has %d bytes, fewer than the %d asked"
                                     % (name, e.size, size))
                return e.shmid
            if not create:
                raise FileNotFoundError("no segment %s" % name)
            return self._table.create(name, size, key, flags).shmid

    def _named(self, name, action):
        """Apply action(entry) to the live region called name, under its
        lock; FileNotFoundError if there is none."""
        Table.check_name(name)
        with self._table.locked(bucket_of(name)):
            e = self._table.lookup(name)
            if e is None:
                raise FileNotFoundError("no region named %r" % name)
            return action(e)

    def map(self, name):
        """Map a region by name.  FileNotFoundError if there is none."""
        return self._named(name, self._attach)

    def map_id(self, shmid):
        """Map a region by id, even one removed but still mapped somewhere."""
        return self._control(shmid, self._attach)

    def _attach(self, e):
        self._table.attach(e)
        region = Region(e, self._memory)
        self._mapped[id(region)] = region
        return region

    def unmap(self, region):
        """Drop one mapping: a Region, or a view of one (memoryview, array).
        ValueError if it is not a live mapping of ours."""
        region = self._mapping_of(region)
        bucket, slot, generation = Table.locate(region.shmid)
        with self._table.locked(bucket):
            e = self._table.read_if(slot, generation)
            del self._mapped[id(region)]
            region.mapped = False
            region.mem.release()
            if e is not None:
                self._table.detach(e)

    def _mapping_of(self, obj):
        """The live mapping obj is, or is a view into."""
        if isinstance(obj, Region):
            if self._mapped.get(id(obj)) is obj:
                return obj
        elif isinstance(obj, (memoryview, np.ndarray)):
            address = np.asarray(obj).__array_interface__["data"][0]
            for r in self._mapped.values():
                if r.contains(address):
                    return r
        raise ValueError("%r is not a region, or a view of one, mapped by this rank"
                         % (obj,))

    def maps(self, shmid):
        """How many live mappings of a region this rank holds."""
        return sum(r.shmid == shmid for r in self._mapped.values())

    def destroy(self, name):
        """Remove a region by name (see the module's destroy semantics)."""
        def remove(e):
            if self.maps(e.shmid):
                raise ValueError("region %r is still mapped by this rank; unmap it first"
                                 % name)
            return self._table.remove(e)
        return self._named(name, remove)

    def stat(self, shmid):
        """The entry of a region by id (size, refcount, creator, key,
        offset...), read under its lock."""
        return self._control(shmid, lambda e: e)

    def remove(self, shmid):
        """IPC_RMID by id: the name goes now, the memory at the last unmap
        anywhere.  True if freed now."""
        return self._control(shmid, self._table.remove)

    def auto_remove(self, shmid):
        """IPC_AUTORMID by id: free at the last unmap; the name stays until then."""
        self._control(shmid, self._table.auto_remove)

    def entries(self):
        """(name, id, size, mappings) of every live region, a snapshot."""
        return [(e.name, e.shmid, e.size, e.refcount) for e in self._table.entries()]

    def _control(self, shmid, action):
        """Apply action(entry) under the entry's lock; FileNotFoundError if
        the id names nothing."""
        bucket, slot, generation = Table.locate(shmid)
        with self._table.locked(bucket):
            e = self._table.read_if(slot, generation)
            if e is None:
                raise FileNotFoundError("no region with id %d" % shmid)
            return action(e)
