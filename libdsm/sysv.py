"""A System V-style interface to the DSM (the xp_* family).

    from libdsm import sysv
    shmid = sysv.shmget(sysv.ftok("/some/file", 1), 4096, sysv.IPC_CREAT | 0o600)
    seg = sysv.shmat(shmid)          # a Region: .mem, .array(), same address everywhere
    ...
    sysv.shmdt(seg)
    sysv.shmctl(shmid, sysv.IPC_RMID)

Segments are named regions (called "sysv:KEY"), so they share the table,
the heap and the locks of `Dsm.create_region`; this module goes through
`Dsm.named_regions` and nothing private.  Errors are OSError with the
System V errno: EEXIST, ENOENT, EINVAL, ENOMEM.  Call `libdsm.init()` first.
"""
import collections
import errno
import itertools
import os

from libdsm import instance
from libdsm.regions import PRIVATE

IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_RMID = 0
IPC_SET = 1
IPC_STAT = 2
IPC_AUTORMID = 16           # SGI: remove the segment at the last detach

ShmStat = collections.namedtuple("ShmStat", "size attach_count creator key")

_private = itertools.count()


def _os_error(code, what):
    return OSError(code, "%s (%s)" % (what, errno.errorcode[code]))


def _call(fn, *args, missing=errno.ENOENT):
    """Run a Regions call, turning its exceptions into System V errnos
    (`missing` for a segment that does not exist)."""
    try:
        return fn(*args)
    except FileExistsError as e:
        raise _os_error(errno.EEXIST, str(e)) from None
    except FileNotFoundError as e:
        raise _os_error(missing, str(e)) from None
    except MemoryError as e:
        raise _os_error(errno.ENOMEM, str(e)) from None
    except ValueError as e:
        raise _os_error(errno.EINVAL, str(e)) from None


def ftok(path, proj_id):
    """A key from a file's identity and a project id, as ftok(3) makes it."""
    if not 0 < proj_id & 0xFF:
        raise _os_error(errno.EINVAL, "proj_id must have a non-zero low byte")
    st = os.stat(path)
    return (st.st_ino & 0xFFFF) | (st.st_dev & 0xFF) << 16 | (proj_id & 0xFF) << 24


def shmget(key, size, flags=0):
    """The id of the segment for key, created if IPC_CREAT says so."""
    dsm = instance()
    regions = dsm.named_regions
    if not isinstance(size, int) or size < 0:
        raise _os_error(errno.EINVAL, "size must be a non-negative int, got %r" % (size,))
    if key == IPC_PRIVATE:
        name = "sysv:private:%d:%d" % (dsm.rank, next(_private))
        return _call(regions.get, name, size, True, True, 0, PRIVATE)
    return _call(regions.get, "sysv:%d" % key, size, bool(flags & IPC_CREAT),
                 bool(flags & IPC_EXCL), key)


def shmat(shmid):
    """Attach a segment: a Region at the same address on every rank."""
    return _call(instance().named_regions.map_id, shmid, missing=errno.EINVAL)


def shmdt(region):
    """Detach a segment attached by this rank."""
    _call(instance().named_regions.unmap, region)


def shmctl(shmid, cmd):
    """IPC_STAT -> ShmStat; IPC_RMID removes after the last detach (the key
    goes at once); IPC_AUTORMID removes at the last detach (the key stays)."""
    actions = {
        IPC_STAT: lambda regions: _stat(regions.stat(shmid)),
        IPC_RMID: lambda regions: regions.remove(shmid) and None,
        IPC_AUTORMID: lambda regions: regions.auto_remove(shmid),
    }
    if cmd not in actions:
        raise _os_error(errno.EINVAL, "unsupported shmctl command %r" % (cmd,))
    return _call(actions[cmd], instance().named_regions, missing=errno.EINVAL)


def _stat(entry):
    return ShmStat(entry.size, entry.refcount, entry.creator, entry.key)
