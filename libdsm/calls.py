"""The methods of Dsm that only hand a call on: the collectives beyond
barrier and bcast (to libdsm.collectives), the synchronisation objects
(to libdsm.locks and libdsm.sync), named regions (to libdsm.regions) and
the partition queries.  Mixed into libdsm.Dsm, whose `_coll`, `_sync`,
`_regions` and `_where` they use."""
from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import numpy as np

from libdsm.locks import Lock
from libdsm.regions import Region, Regions
from libdsm.sync import Condition, Event, Semaphore

Op = Literal["sum", "prod", "min", "max", "land", "lor", "lxor", "band", "bor", "bxor"]
"""The ops of allreduce, reduce, scan, exscan and reduce_scatter (a type alias)."""


class CollectiveCalls:
    """Dsm's reductions, scans, scatters and gathers."""

    _coll: Any

    def allreduce(self, x: Any, op: Op = "sum", out: np.ndarray | None = None) -> Any:
        """Collective: x (numbers, bools, complex, lists of them, arrays)
        combined elementwise over every rank with op: "sum", "prod", "min",
        "max", "land", "lor", "lxor", "band", "bor" or "bxor" (numpy's
        result).  Every rank gets it in x's form, or in `out` (an array)."""
        return self._coll.reduce(x, op, None, out)

    def reduce(self, x: Any, op: Op = "sum", root: int = 0,
               out: np.ndarray | None = None) -> Any:
        """Like allreduce, but only root gets the result; the others None."""
        return self._coll.reduce(x, op, root, out)

    def scan(self, x: Any, op: Op = "sum", out: np.ndarray | None = None) -> Any:
        """Collective: rank r gets the combination of ranks 0..r's x."""
        return self._coll.scan(x, op, False, out)

    def exscan(self, x: Any, op: Op = "sum", out: np.ndarray | None = None) -> Any:
        """Collective: rank r gets that of ranks 0..r-1's x; rank 0 None."""
        return self._coll.scan(x, op, True, out)

    def reduce_scatter(self, x: Any, op: Op = "sum", counts: Sequence[int] | None = None,
                       out: np.ndarray | None = None) -> Any:
        """Collective: block r (counts[r] rows, else as np.array_split) of
        allreduce(x), to rank r."""
        return self._coll.reduce_scatter(x, op, counts, out)

    def scatter(self, values: Sequence[Any] | None = None, root: int = 0) -> Any:
        """Collective: rank r gets values[r] of root's list (one bcast)."""
        return self._coll.scatter(values, root)

    def alltoall(self, values: Sequence[Any]) -> list[Any]:
        """Collective: rank r gets [values[r] of every rank], by rank."""
        return self._coll.alltoall(values)

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        """Collective: root gets the list of every rank's value (anything
        picklable), in rank order; the others None."""
        return self._coll.gather(value, root)

    def allgather(self, value: Any) -> list[Any]:
        """Collective: every rank gets the list of every rank's value."""
        return self._coll.gather(value, None)

    def bcast(self, value: Any = None, root: int = 0) -> Any:
        """Collective: every rank returns root's value (anything picklable,
        an Allocation included, bound to this rank's region).  Writes root
        made before the call are visible to every rank after it."""
        return self._coll.bcast(value, root)


class SyncCalls:
    """Dsm's locks, and its Condition, Event and Semaphore, each by name."""

    _coll: Any
    _locks: Any
    _sync: Any

    def lock(self, k: int | str) -> Lock:
        """Global lock k (0 <= k < DSM_LOCKS), or the lock called k (a str:
        see libdsm.locks.Locks.named).  Kept by rank k % size."""
        return self._locks.user(k)

    def condition(self, name: str, lock: Lock | None = None) -> Condition:
        """The Condition called name, on lock (default dsm.lock(name))."""
        self._coll.check()
        return self._sync.condition(name, lock)

    def event(self, name: str) -> Event:
        """The Event called name (threading.Event across ranks)."""
        self._coll.check()
        return self._sync.event(name)

    def semaphore(self, name: str, value: int = 1) -> Semaphore:
        """The Semaphore called name; every rank gives the same value."""
        self._coll.check()
        return self._sync.semaphore(name, value)


class RegionCalls:
    """Dsm's named regions and partition queries."""

    _coll: Any
    _regions: Regions
    _where: Any
    rank: int
    size: int
    page_size: int
    page_home: Callable[[int], int]

    @property
    def named_regions(self) -> Regions:
        """This rank's named regions (a libdsm.regions.Regions), for layers
        built on them such as libdsm.sysv; programs use the calls below."""
        return self._regions

    def create_region(self, name: str, size: int) -> int:
        """Create a region called name, of size bytes; returns its id.
        FileExistsError if the name is taken, MemoryError if there is no room.
        Two ranks racing to create one name: exactly one succeeds."""
        self._coll.check()
        return self._regions.create(name, size)

    def map_region(self, name: str) -> Region:
        """Map the region called name: a Region whose .mem (and .array())
        sit at the same address on every rank.  Each mapping counts.
        FileNotFoundError if there is no such region."""
        self._coll.check()
        return self._regions.map(name)

    def unmap_region(self, region: Region | memoryview | np.ndarray) -> None:
        """Drop one mapping; ValueError if it is not mapped by this rank."""
        self._coll.check()
        self._regions.unmap(region)

    def destroy_region(self, name: str) -> bool:
        """Remove a region.  ValueError while this rank still maps it.  Its
        name goes at once; its memory is freed now if no rank maps it, else
        at the last unmap anywhere (as IPC_RMID).  True if freed now."""
        self._coll.check()
        return self._regions.destroy(name)

    def regions(self) -> list[tuple[str, int, int, int]]:
        """(name, id, size, mappings) of every region in use, a snapshot."""
        return self._regions.entries()

    # ------------------------------------------------------------ partitions
    def partition_id(self) -> int:
        """This partition (rank)."""
        return self.rank

    def partition_count(self) -> int:
        return self.size

    def partition_list(self) -> list[int]:
        return list(range(self.size))

    def partition_hostnames(self) -> list[str]:
        return self._where.hostnames()

    def segment_owner(self, shmid: int) -> int:
        """The rank whose memory homes a segment: the home of its first page."""
        return self.page_home(self._regions.stat(shmid).offset // self.page_size)
