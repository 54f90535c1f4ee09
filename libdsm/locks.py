"""Global locks: `dsm.lock(k)`, and the numbering of user and system locks."""
from libdsm import _binding


class Lock:
    """Lock k of the job.  Its state lives with its home rank, k % size.

    Use it as a context manager, or call acquire() and release().  Writes
    made while holding it are seen by the next holder (the memory is
    sequentially consistent).  Releasing a lock this rank does not hold
    raises LockError.
    """

    def __init__(self, index, home):
        self.index = index
        self.home = home

    def acquire(self):
        """Block until this rank holds the lock (the GIL is released meanwhile)."""
        _binding.lock_acquire(self.index)
        return True

    def release(self):
        _binding.lock_release(self.index)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __repr__(self):
        return "<libdsm.Lock %d, home rank %d>" % (self.index, self.home)


class Locks:
    """The job's locks as numbered in the C core: nlocks user locks (`dsm.lock`),
    then the system locks that guard the heap and the region table."""

    def __init__(self, nlocks, size):
        self.nlocks = nlocks
        self._size = size
        self._user = {}

    def user(self, k):
        """User lock k (0 <= k < nlocks), one Lock object per k."""
        if not isinstance(k, int) or not 0 <= k < self.nlocks:
            raise ValueError("lock %r out of range 0..%d (DSM_LOCKS)" % (k, self.nlocks - 1))
        if k not in self._user:
            self._user[k] = Lock(k, k % self._size)
        return self._user[k]

    def system(self, k):
        """System lock k: numbered past the user's."""
        return Lock(self.nlocks + k, (self.nlocks + k) % self._size)
