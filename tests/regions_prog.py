"""The named-region and System V scenarios for the tests: run under dsmexec,
it does what the test asks and prints lines the test checks.

    regions_prog.py SCENARIO
"""
import errno
import sys

import libdsm
from libdsm import sysv


def race(dsm):
    """Every rank creates the same name at once: exactly one wins."""
    try:
        dsm.create_region("contested", 5000)
        won = 1
    except FileExistsError:
        won = 0
    wins = sum(dsm.bcast(won, root=r) for r in range(dsm.size))
    print("race won=%d total_wins=%d" % (won, wins))


def lifecycle(dsm):
    """Map, write and read across ranks; counts; destroy at the last unmap;
    the space is reused."""
    free_before = dsm._heap.usage()[0]
    dsm.barrier()
    if dsm.rank == 0:
        dsm.create_region("life", 3 * dsm.page_size)
    dsm.barrier()
    a, b = dsm.map_region("life"), dsm.map_region("life")      # two mappings each
    a.mem[dsm.rank * 8:dsm.rank * 8 + 8] = bytes([dsm.rank + 1]) * 8
    dsm.barrier()
    seen = all(bytes(b.mem[r * 8:r * 8 + 8]) == bytes([r + 1]) * 8 for r in range(dsm.size))
    count = dict((n, c) for n, _, _, c in dsm.regions())["life"]
    same_address = len(set(dsm.bcast(a.address, root=r) for r in range(dsm.size))) == 1
    dsm.barrier()
    dsm.unmap_region(a)
    dsm.barrier()
    last = dsm.size - 1
    if dsm.rank == last:
        dsm.unmap_region(b)
        freed_now = dsm.destroy_region("life")          # others still map it
    dsm.barrier()
    hidden = "life" not in [n for n, *_ in dsm.regions()]
    if dsm.rank != last:
        dsm.unmap_region(b)
    dsm.barrier()
    reused = False
    if dsm.rank == 0:
        freed_now = None
        dsm.create_region("life", 3 * dsm.page_size)   # the name is free again
        r = dsm.map_region("life")
        reused = r.offset == a.offset
        dsm.unmap_region(r)
        dsm.destroy_region("life")
    dsm.barrier()
    print("lifecycle seen=%d count=%d same_address=%d hidden=%d reused=%d free_back=%d%s" % (
        seen, count, same_address, hidden, reused if dsm.rank == 0 else 1,
        dsm._heap.usage()[0] == free_before,
        " destroy_freed_now=%d" % freed_now if dsm.rank == last else ""))


def errors(dsm):
    """ERR_EXIST, ERR_NOTEXIST, ERR_NOMEM, ERR_INVAL."""
    def err(kind, fn):
        try:
            fn()
        except kind as e:
            return type(e).__name__
        return "none"
    name = "errs%d" % dsm.rank
    dsm.create_region(name, 100)
    r = dsm.map_region(name)
    out = [err(FileExistsError, lambda: dsm.create_region(name, 100)),
           err(FileNotFoundError, lambda: dsm.map_region("nothing-%d" % dsm.rank)),
           err(MemoryError, lambda: dsm.create_region("huge%d" % dsm.rank, dsm.nbytes)),
           err(ValueError, lambda: dsm.destroy_region(name))]
    dsm.unmap_region(r)
    out.append(err(ValueError, lambda: dsm.unmap_region(r)))
    out.append(err(FileNotFoundError, lambda: dsm.destroy_region("nothing")))
    dsm.destroy_region(name)
    print("errors " + " ".join(out))


def sysv_flags(dsm):
    """The System V calls, flags and errnos."""
    def code(fn):
        try:
            fn()
        except OSError as e:
            return errno.errorcode[e.errno]
        return "ok"
    key = sysv.ftok(__file__, 3)
    if dsm.rank == 0:
        sysv.shmget(key, 8192, sysv.IPC_CREAT | sysv.IPC_EXCL | 0o600)
    dsm.barrier()
    shmid = sysv.shmget(key, 4096)                  # smaller than the segment: fine
    seg = sysv.shmat(shmid)
    out = [code(lambda: sysv.shmget(key, 4096, sysv.IPC_CREAT | sysv.IPC_EXCL)),
           code(lambda: sysv.shmget(key + 1, 4096)),
           code(lambda: sysv.shmget(key, 16384)),
           code(lambda: sysv.shmget(key + 2, 1 << 40, sysv.IPC_CREAT)),
           code(lambda: sysv.shmat(shmid + (1 << 30)))]
    p1, p2 = sysv.shmget(sysv.IPC_PRIVATE, 64), sysv.shmget(sysv.IPC_PRIVATE, 64)
    out.append("private_distinct=%d" % (p1 != p2))
    for p in (p1, p2):
        sysv.shmctl(p, sysv.IPC_RMID)
    dsm.barrier()
    st = sysv.shmctl(shmid, sysv.IPC_STAT)
    out.append("stat=%d,%d,%d" % (st.size, st.attach_count, st.creator))
    out.append("owner=%d" % (dsm.segment_owner(shmid) == dsm.page_home(seg.offset //
                                                                      dsm.page_size)))
    dsm.barrier()
    if dsm.rank == 0:
        sysv.shmctl(shmid, sysv.IPC_AUTORMID)       # the key stays until the last detach
    dsm.barrier()
    out.append("key_kept=%s" % code(lambda: sysv.shmget(key, 0)))
    sysv.shmdt(seg)
    out.append(code(lambda: sysv.shmdt(seg)))
    dsm.barrier()
    out.append("removed=%s" % code(lambda: sysv.shmget(key, 0)))
    print("sysv " + " ".join(out))


def partitions(dsm):
    print("partitions id=%d count=%d list=%s hosts=%s" % (
        dsm.partition_id(), dsm.partition_count(), dsm.partition_list(),
        ",".join(dsm.partition_hostnames())))


def named_array(dsm):
    """dsm.array(name=...) creates on first use and maps after."""
    arr = dsm.array((4, 512), "int32", name="grid")
    arr[dsm.rank % 4, :] = dsm.rank + 1
    dsm.barrier()
    print("named_array sum=%d" % int(arr.sum()))


SCENARIOS = {f.__name__: f for f in (race, lifecycle, errors, sysv_flags, partitions,
                                     named_array)}

if __name__ == "__main__":
    with libdsm.init() as d:
        SCENARIOS[sys.argv[1]](d)
