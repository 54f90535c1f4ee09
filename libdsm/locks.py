"""Global locks: `dsm.lock(k)` and `dsm.lock("name")`, as `threading.Lock`
across ranks, and the numbering of user and system locks.  With host-shared
memory (share="host") a lock numbered below _binding.HOST_LOCKS is a futex
in the host's shared control area (libdsm/csrc/hostlock.c) instead of a
queue kept by its home rank."""
from __future__ import annotations

import threading
import zlib
from typing import Literal

from libdsm import _binding
from libdsm.errors import LockError


class Lock:
    """Lock k of the job.  Its state lives with its home rank, k % size.

    Use it as a context manager, or call acquire() and release(), as a
    `threading.Lock`.  Writes made while holding it are seen by the next
    holder.  Releasing a lock this rank does not hold raises LockError; so
    does a blocking acquire by the thread that holds it already (it would
    never return).
    """

    def __init__(self, index: int, home: int, owners: dict[int, tuple[int, str | None]],
                 name: str | None = None, host: bool = False) -> None:
        self.index: int = index
        self.home: int = home
        self.name: str | None = name
        self._owners = owners       # index -> (thread ident, name) of this rank's holder
        self._within, self._release, self._held = (
            (_binding.host_lock_acquire_within, _binding.host_lock_release,
             _binding.host_lock_held) if host else
            (_binding.lock_acquire_within, _binding.lock_release, _binding.lock_held))

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As threading.Lock.acquire: True once this rank holds the lock;
        False if blocking is false and it is held (by another rank, or
        another thread of this one), or after timeout seconds.  The GIL is
        released meanwhile.  A non-blocking acquire asks the lock's home
        (one round trip) and never queues; a timed one that gives up leaves
        its request to be handed on when its turn comes."""
        if not blocking and timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        if timeout < 0 and timeout != -1:
            raise ValueError("timeout value must be a non-negative number")
        held = self._owners.get(self.index)
        if held and held[0] == threading.get_ident():
            if not blocking or timeout >= 0:
                return False
            raise LockError("%s is already held by this thread%s: acquiring it again would "
                            "never return" % (self._what(), self._shared_with(held[1])))
        if not self._within(self.index, None if blocking and timeout == -1 else
                            timeout if blocking else 0):
            return False
        self._owners[self.index] = (threading.get_ident(), self.name)
        return True

    def release(self) -> None:
        held = self._owners.pop(self.index, None)
        try:
            self._release(self.index)
        except LockError:
            if held:
                self._owners[self.index] = held
            raise

    def locked(self) -> bool:
        """As threading.Lock.locked: is the lock held, by any rank?  True at
        once if this rank holds it; otherwise a non-blocking acquire (and
        release) finds out, so the answer may be stale when it comes."""
        if self._held(self.index):
            return True
        if self._within(self.index, 0):
            self._release(self.index)
            return False
        return True

    def held_by_me(self) -> bool:
        """Does the calling thread hold this lock?"""
        held = self._owners.get(self.index)
        return bool(held) and held[0] == threading.get_ident()

    def _what(self):
        return "lock %d" % self.index + (" (%r)" % self.name if self.name is not None else "")

    def _shared_with(self, other):
        if other == self.name:
            return ""
        return " under %s: names share a lock when they hash alike; use lock numbers" % (
            "lock %d" % self.index if other is None else "the name %r" % other)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.release()
        return False

    def __repr__(self) -> str:
        return "<libdsm.Lock %s, home rank %d>" % (self._what()[5:], self.home)


class Locks:
    """The job's locks as numbered in the C core: nlocks user locks (`dsm.lock`),
    then the system locks that guard the heap and the region table.
    host: the job's ranks share the host's memory, and its locks."""

    def __init__(self, nlocks, size, host=False):
        self.nlocks = nlocks
        self._size = size
        self._host = host
        self._user = {}
        self._owners = {}

    def user(self, k):
        """User lock k (0 <= k < nlocks), or the lock called k (a str)."""
        if isinstance(k, str):
            return self.named(k)
        if not isinstance(k, int) or not 0 <= k < self.nlocks:
            raise ValueError("lock %r out of range 0..%d (DSM_LOCKS), or give a name (a str)"
                             % (k, self.nlocks - 1))
        if k not in self._user:
            self._user[k] = self._make(k)
        return self._user[k]

    def named(self, name):
        """The lock called name.  Names map to the last quarter of the user
        locks (all of them when there are fewer than 4) by the CRC-32 of the
        name, so every rank finds the same lock for a name without asking.
        Two names, or a name and a number, may land on one lock: they then
        share it, which is correct, only more contended; one thread holding
        both at once gets a LockError that says so instead of a deadlock."""
        if not name:
            raise ValueError("a lock name is a non-empty str")
        reserved = self.nlocks // 4 if self.nlocks >= 4 else self.nlocks
        k = self.nlocks - reserved + zlib.crc32(name.encode()) % reserved
        if (k, name) not in self._user:
            self._user[k, name] = self._make(k, name)
        return self._user[k, name]

    def system(self, k):
        """System lock k: numbered past the user's."""
        return self._make(self.nlocks + k)

    def _make(self, k, name=None):
        return Lock(k, k % self._size, self._owners, name,
                    self._host and k < _binding.HOST_LOCKS)
