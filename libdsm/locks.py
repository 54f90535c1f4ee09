"""Global locks: `dsm.lock(k)`."""
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
