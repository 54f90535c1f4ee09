"""Pinned pages, and system calls on DSM memory.

A system call never faults a DSM page in: handed a page this rank does not
hold, it fails with EFAULT, or writes part of the data and stops.  Inside
`pinned(obj)` every page under obj is here and stays here (the C core
defers other ranks' requests for it until the block ends), so system calls
on it behave.  `save`, `write` and `readinto` do their system calls inside
it: each completes in full or raises, and none leaves a partial file.

Pins are taken in ascending page order, each as soon as its page is here,
so ranks pinning each other's pages never wait for each other in a circle.
A `pinned` inside another one breaks that order; two ranks doing so on each
other's pages wait for the timeout and get PinTimeoutError.
"""
import contextlib
import os
import stat
import tempfile

from libdsm import _binding

PIN_TIMEOUT = 60.0
"""Seconds to wait for pages another rank holds pinned."""


class Pins:
    """dsm.pinned and the helpers built on it.  `span(obj)` gives the
    (offset, nbytes) of something on the region; release: the region is in
    release consistency, where pages are not pinned."""

    def __init__(self, memory, span, release=False):
        self._memory, self._span, self._release = memory, span, release
        self._held = []                 # (first, count) of the pinned blocks open now

    @contextlib.contextmanager
    def pinned(self, obj, write=False, timeout=PIN_TIMEOUT):
        """Make every page under obj resident (writable if write) and keep it
        so until the block ends; yields obj.  timeout: seconds, or None for
        no limit."""
        if timeout is not None and not timeout > 0:
            raise ValueError("the pin timeout must be positive or None, got %r" % (timeout,))
        first, count = self._memory.pages(*self._span(obj))
        if count:
            _binding.pin(first, count, write, timeout)
        self._held.append((first, count))
        try:
            yield obj
        finally:
            self._held.remove((first, count))
            if count:
                _binding.unpin(first, count)

    def tofile(self, arr, fid, sep, format):      # noqa: A002  (numpy's name)
        """ndarray.tofile of an array on the region, all of it: with its
        pages pinned for the write (in release mode, from a private copy)."""
        if self._release:
            return arr.copy().tofile(fid, sep, format)
        first, count = self._memory.pages(*self._span(arr))
        if any(f <= first and first + count <= f + n for f, n in self._held):
            return arr.tofile(fid, sep, format)         # inside dsm.pinned(...) already
        with self.pinned(arr):
            return arr.tofile(fid, sep, format)

    def _bytes(self, obj):
        """The writable byte view of obj's memory, which must be contiguous."""
        offset, nbytes = self._span(obj)
        contiguous = getattr(obj, "flags", None)
        if isinstance(obj, memoryview):
            contiguous = obj.c_contiguous
        elif contiguous is not None:
            contiguous = contiguous.c_contiguous
        if contiguous is False:
            raise ValueError("write and readinto need C-contiguous memory; "
                             "use save (or copy the array) for a strided one")
        return self._memory.view(offset, nbytes)

    def save(self, file, array):
        """np.save(file, array) with array's pages pinned.  A path is written
        to a temporary file in the same directory and renamed into place, so
        no partial file is ever left; ".npy" is appended as np.save does."""
        import numpy as np
        if not isinstance(file, (str, bytes, os.PathLike)):
            with self.pinned(array):
                np.save(file, array)
            return
        path = os.fsdecode(file)
        path = path if path.endswith(".npy") else path + ".npy"
        with _replacing(path) as f, self.pinned(array):
            np.save(f, array)

    def write(self, dest, obj):
        """Write obj's bytes to a file descriptor or binary file, in full, or
        raise: a file that grew is cut back to its size before the call."""
        view = self._bytes(obj)
        with self.pinned(obj):
            if isinstance(dest, int):
                _write_fd(dest, view)
                return
            if not _has_fd(dest):         # BytesIO and such: copied in user space
                dest.write(view)
                return
            dest.flush()
            fd = dest.fileno()
            _write_fd(fd, view)
            if dest.seekable():         # the file object's position follows the fd's
                dest.seek(os.lseek(fd, 0, os.SEEK_CUR))

    def readinto(self, src, obj):
        """Fill obj with exactly its size in bytes from a file descriptor or
        binary file, or raise (EOFError when the data ends first)."""
        view = self._bytes(obj)
        with self.pinned(obj, write=True):
            if isinstance(src, int):
                read = lambda part: os.readv(src, [part])       # noqa: E731
            else:
                read = src.readinto
            got = 0
            while got < len(view):
                n = read(view[got:])
                if n is None:
                    raise BlockingIOError("readinto: the source would block after %d of %d "
                                          "bytes" % (got, len(view)))
                if n == 0:
                    raise EOFError("readinto: expected %d bytes, got %d" % (len(view), got))
                got += n


def _has_fd(f):
    try:
        f.fileno()
    except (AttributeError, OSError):       # io.UnsupportedOperation is an OSError
        return False
    return True


def _write_fd(fd, view):
    """os.write until all of view is out; on an error, cut a regular file
    back to its size before, and re-raise."""
    st = os.fstat(fd)
    done = 0
    try:
        while done < len(view):
            done += os.write(fd, view[done:])
    except BaseException:
        if done and stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                os.ftruncate(fd, st.st_size)
        raise


@contextlib.contextmanager
def _replacing(path):
    """A binary file that replaces path when the block succeeds, and is
    removed when it fails."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)    # as open() would have made it
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
