"""What tests/test_hostshm.py asks of a job in host-shared memory:

    hostshm_prog.py calls      every call that touches memory, then the counters
    hostshm_prog.py locks N    two threads per rank add 1 under a lock N times each
    hostshm_prog.py kill       rank 1 is SIGKILLed while the others wait in a barrier
    hostshm_prog.py fork       a child forked after init touches the memory
    hostshm_prog.py where      where the memory comes from, and what the hand-over left
    hostshm_prog.py ckpt       one checkpoint of a filled array
"""
import hashlib
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import libdsm
from libdsm_services import rank


def calls(dsm):
    """Arrays (default homes and placed), malloc, a named region, free,
    prefetch, pins, collectives: every page stays here, nothing faults."""
    with dsm.array((256, 1024), "int64") as a:
        rows = a.shape[0] // dsm.size
        a[dsm.rank * rows:(dsm.rank + 1) * rows] = dsm.rank + 1
        dsm.barrier()
        print("sum", int(a.sum()), "expected", sum((r + 1) * rows * 1024 for r in range(dsm.size)))
    b = dsm.array((64, 512), "float64", homes="row_block")
    dsm.prefetch(b, write=True)
    if os.environ.get("DSM_CONSISTENCY") == "release":    # no pins there, in any mode
        b[dsm.rank] = dsm.rank
    else:
        with dsm.pinned(b, write=True):
            b[dsm.rank] = dsm.rank
    dsm.barrier()
    print("placed", b[:dsm.size, 0].tolist())
    m = dsm.malloc(4096)
    dsm.free(m)
    if dsm.rank == 0:
        dsm.create_region("shared-counter", 4096)
    dsm.barrier()
    r = dsm.map_region("shared-counter").array("int64")
    r[dsm.rank] = 10 + dsm.rank
    dsm.barrier(timeout=60)
    print("region", r[:dsm.size].tolist())
    print("allreduce", dsm.allreduce(dsm.rank + 1, "sum"), "bcast", dsm.bcast("x" * 3, 0))
    dsm.free(b)
    pages = dsm.nbytes // dsm.page_size
    print("access", sorted({dsm.page_access(p) for p in range(0, pages, 97)}))
    s = dsm.stats()
    print("faults", s["read_faults"] + s["write_faults"], "pages moved",
          s["pages_sent"] + s["pages_prefetched"], "twins", s["twins"])


def locks(dsm, n):
    counter = dsm.array(1, "int64")
    lock = dsm.lock(3)

    def work(_):
        for _ in range(n):
            with lock:
                counter[0] += 1
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, range(2)))
    dsm.barrier()
    print("count", int(counter[0]), "expected", 2 * n * dsm.size)


def kill(dsm):
    dsm.barrier()
    if dsm.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        dsm.barrier()
        print("survived the barrier")
    except libdsm.PeerError as e:
        print("PeerError peer=%s: %s" % (e.peer, e))
        raise


def fork(dsm):
    a = dsm.array(16, "int64")
    dsm.barrier()
    pid = os.fork()
    if pid == 0:
        a[0] = 1                # refused: the child is no rank
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child", "signalled" if os.WIFSIGNALED(status) else "exit %d" % os.WEXITSTATUS(status))
    dsm.barrier()
    print("a[0] after the child", int(a[0]))


def where(dsm):
    maps = [line.split()[-2:] for line in open("/proc/self/maps")
            if int(line.split("-")[0], 16) == dsm.base]
    print("mapped from", " ".join(maps[0]))
    dsm.barrier()                       # every rank has its memfd: the socket is shut
    sockets = [line for line in open("/proc/net/unix") if "@libdsm-" in line]
    mine = "@libdsm-%s" % hashlib.sha256(rank.CONTEXT.secret).hexdigest()[:16]
    print("sockets left", sum(mine in line for line in sockets))


def ckpt(dsm):
    a = dsm.array((128, 1024), "float64")
    rows = a.shape[0] // dsm.size
    a[dsm.rank * rows:(dsm.rank + 1) * rows] = dsm.rank + 0.5
    dsm.checkpoint({"rank": dsm.rank})
    print("saved", dsm.stats()["checkpoint_bytes"])


def main():
    dsm = libdsm.init(size="32M")
    what = sys.argv[1]
    if what == "locks":
        locks(dsm, int(sys.argv[2]))
    else:
        {"calls": calls, "kill": kill, "fork": fork, "where": where, "ckpt": ckpt}[what](dsm)
    dsm.finalize()


if __name__ == "__main__":
    main()
