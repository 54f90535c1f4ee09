"""Condition, Event and Semaphore across ranks, as in `threading`.

Each is named: every rank that asks for `dsm.condition("q")` gets the same
one, with no collective call.  Its state is a small named array on the
region (`libdsm.sync.<name>`), guarded by a DSM lock (by default the lock
of the same name).  A waiter puts (its rank, its thread's key) on the
waiter list, releases the lock and sleeps in the C core's counted mailbox
(`dsm_take`: no polling, the GIL released); notify pops waiters and posts
to each (`dsm_post`).  A post that comes before its take is counted, so no
wake-up is lost.  Event and Semaphore are a Condition with a value.  In a
job on one host with share="host" the mailboxes are in the host's shared
memory (`dsm_host_post`, `dsm_host_take`: hostmbox.c), so a wake-up sends
no message.
"""
from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Callable, Literal, TypeVar

import numpy as np

from libdsm import _binding
from libdsm.locks import Lock

T = TypeVar("T")

_MAGIC = 0x6c696264736d5359         # marks the state initialised
_HEADER = 4                          # magic, value, waiters, capacity
THREADS = 64                         # waiting threads per rank a Condition holds


class Condition:
    """A condition variable on a DSM lock, as threading.Condition: wait()
    and notify() are called holding the lock; wait() releases it while it
    sleeps and holds it again when it returns.  Waiters are woken in the
    order they began to wait."""

    def __init__(self, lock: Lock, state: np.ndarray, rank: int, initial: int = 0,
                 host: bool = False) -> None:
        self._lock, self._state, self._rank = lock, state, rank
        self._initial = initial
        self._post, self._take = ((_binding.host_post, _binding.host_take) if host else
                                  (_binding.post, _binding.take))

    # ------------------------------------------------------------ the lock
    def acquire(self, *args: Any, **kw: Any) -> bool:
        return self._lock.acquire(*args, **kw)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> Condition:
        self._lock.acquire()
        self._init()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        # a wait that failed (a PeerError) may not have the lock again:
        # its error goes on, not a LockError from this release
        if exc[0] is None or self._lock.held_by_me():
            self._lock.release()
        return False

    def _init(self):
        """Set the state up if no rank has yet (holding the lock)."""
        s = self._state
        if s[0] != _MAGIC:
            s[1:] = 0
            s[1], s[3] = self._initial, (len(s) - _HEADER) // 2
            s[0] = _MAGIC

    def _owned(self, what):
        if not self._lock.held_by_me():
            raise RuntimeError("cannot %s an un-acquired lock" % what)
        self._init()

    # ------------------------------------------------------------ waiting
    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or timeout seconds passed,
        take the lock again.  True if notified, False on the timeout."""
        self._owned("wait on")
        s, key = self._state, threading.get_ident()
        n = int(s[2])
        if n == s[3]:
            raise RuntimeError("%d threads wait on this condition already: the most it "
                               "holds (libdsm.sync.THREADS per rank)" % n)
        s[_HEADER + 2 * n:_HEADER + 2 * n + 2] = (self._rank, key)
        s[2] = n + 1
        self._lock.release()
        try:
            notified = self._take(key, timeout)
        finally:
            self._lock.acquire()
        if not notified and not self._forget(key):
            self._take(key, None)        # a notify took us off the list: its post is coming
            notified = True
        return notified

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Wait until predicate() is true (checked holding the lock), or
        timeout seconds passed; the last value of predicate()."""
        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def _forget(self, key):
        """Take this thread off the waiter list; was it on it?"""
        s, n = self._state, int(self._state[2])
        entries = s[_HEADER:_HEADER + 2 * n].reshape(n, 2)
        at = np.flatnonzero((entries[:, 0] == self._rank) & (entries[:, 1] == key))
        if not len(at):
            return False
        i = _HEADER + 2 * int(at[0])
        s[i:_HEADER + 2 * n - 2] = s[i + 2:_HEADER + 2 * n].copy()
        s[2] = n - 1
        return True

    def notify(self, n: int = 1) -> None:
        """Wake up to n waiters, the longest waiting first."""
        self._owned("notify on")
        s, count = self._state, int(self._state[2])
        k = min(int(n), count)
        woken = s[_HEADER:_HEADER + 2 * k].reshape(k, 2).copy()
        s[_HEADER:_HEADER + 2 * (count - k)] = s[_HEADER + 2 * k:_HEADER + 2 * count].copy()
        s[2] = count - k
        for rank, key in woken:
            self._post(int(rank), int(key))

    def notify_all(self) -> None:
        self.notify(1 << 62)

    @property
    def value(self) -> int:
        """The number Event and Semaphore keep with the condition (under its lock)."""
        return int(self._state[1])

    @value.setter
    def value(self, v: int) -> None:
        self._state[1] = v


class Semaphore:
    """threading.Semaphore across ranks."""

    def __init__(self, cond: Condition) -> None:
        self._cond = cond

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one unit: True, or False if none came (non-blocking, timeout)."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        with self._cond:
            if not self._cond.wait_for(lambda: self._cond.value > 0,
                                       timeout if blocking else 0):
                return False
            self._cond.value -= 1
            return True

    def release(self, n: int = 1) -> None:
        """Give back n units, waking as many waiters."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._cond:
            self._cond.value += n
            self._cond.notify(n)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> Literal[False]:
        self.release()
        return False


class Event:
    """threading.Event across ranks: set() wakes every waiting thread of
    every rank."""

    def __init__(self, cond: Condition) -> None:
        self._cond = cond

    def is_set(self) -> bool:
        with self._cond:
            return bool(self._cond.value)

    def set(self) -> None:
        with self._cond:
            self._cond.value = 1
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._cond.value = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Until the flag is set (True) or timeout seconds passed (False)."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: self._cond.value, timeout))


class Sync:
    """One rank's factory of the above: `locks` gives DSM locks,
    `named_array(name, words)` a named uint64 array on the region; host: the
    job's ranks share one host's memory, and its mailboxes."""

    def __init__(self, locks, named_array, rank, size, host=False):
        self._locks, self._named_array = locks, named_array
        self._rank, self._size, self._host = rank, size, host
        self._states = {}           # name -> its state array, mapped once per rank

    def condition(self, name, lock=None, value=0):
        """The Condition called name, on lock (default: the lock called
        name); value: what Event and Semaphore start from."""
        if not isinstance(name, str) or not name:
            raise ValueError("a condition name is a non-empty str, got %r" % (name,))
        if name not in self._states:
            region = "libdsm.sync." + hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
            self._states[name] = self._named_array(region, _HEADER + 2 * THREADS * self._size)
        state = self._states[name]
        return Condition(self._locks.named(name) if lock is None else lock, state, self._rank,
                         value, self._host)

    def semaphore(self, name, value=1):
        """Every rank must give the same initial value: the first to use
        the semaphore sets it."""
        if not isinstance(value, int) or value < 0:
            raise ValueError("semaphore initial value must be an int >= 0, got %r" % (value,))
        return Semaphore(self.condition("semaphore." + name, value=value))

    def event(self, name):
        return Event(self.condition("event." + name))
