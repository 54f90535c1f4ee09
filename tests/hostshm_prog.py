"""What tests/test_hostshm.py asks of a job in host-shared memory:

    hostshm_prog.py calls      every call that touches memory, then the counters
    hostshm_prog.py locks N    two threads per rank add 1 under a lock N times each
    hostshm_prog.py fork       a child forked after init touches the memory
    hostshm_prog.py where      where the memory comes from, and what the hand-over left
    hostshm_prog.py ckpt       one checkpoint of a filled array
    hostshm_prog.py colls      every collective, each result's hash, and the messages sent
                               (the large reduces' apart: across hosts every rank sends)
    hostshm_prog.py trylock    try-locks, timeouts and a release by a non-holder
    hostshm_prog.py mismatch   ranks call different collectives; then one more that agrees
    hostshm_prog.py bigmismatch  ranks pass different shapes, types, ops or roots to large
                               reduces (and a small one); then one more that agrees
    hostshm_prog.py finalizing [big]  rank 0 finalizes while rank 1 calls bcast (or a
                               large allreduce; then rank 1 exits)
    hostshm_prog.py diecoll W  rank 1 is SIGKILLed while the others wait for it in W
                               (a "barrier", its "bcast", or a "lock" it holds), or
                               ("page") once it mapped a page the others then write
"""
import hashlib
import os
import signal
import sys
import threading
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
    n = int(n)
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


def digest(value):
    """A hash of a result's exact bits (arrays with their dtype and shape)."""
    if isinstance(value, np.ndarray):
        return "%s%s:%s" % (value.dtype, value.shape,
                            hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16])
    if isinstance(value, list):
        return "[%s]" % ",".join(digest(v) for v in value)
    if isinstance(value, bytes):
        return "bytes%d:%s" % (len(value), hashlib.sha256(value).hexdigest()[:16])
    return "%s:%r" % (type(value).__name__, value)


def colls(dsm):
    """Every collective on values that differ by rank, with floats whose sum
    depends on the order (and arrays larger than a shared-memory slot);
    each result as a hash, then the messages sent for all of them but the
    large reduces (across hosts they run among all the ranks: hostcoll.c),
    then those sent for the large reduces."""
    rng = np.random.default_rng(1000 + dsm.rank)
    small = rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 8, 1000)
    big = rng.standard_normal(300_000) * 1e6            # 2.4 MB: several rounds
    ints = rng.integers(-2**40, 2**40, 1500)       # small: each N x (8 + bytes) < 64 KiB
    sent = dsm.stats()["msgs_sent"]
    results = {
        "barrier": dsm.barrier(),
        "bcast-small": dsm.bcast("v%d" % dsm.rank if dsm.rank == 1 else None, root=1),
        "bcast-big": dsm.bcast(big if dsm.rank == 0 else None, root=0),
        "allreduce-small": dsm.allreduce(small, "sum"),
        "allreduce-f32": dsm.allreduce(small.astype("float32"), "prod"),
        "allreduce-minmax": [dsm.allreduce(small, op) for op in ("min", "max")],
        "allreduce-ints": [dsm.allreduce(ints, op) for op in ("sum", "prod", "bxor", "land")],
        "allreduce-scalar": dsm.allreduce(dsm.rank + 0.1, "sum"),
        "allreduce-complex": dsm.allreduce(small[:500] * (1 + 1j), "sum"),
        "allreduce-complex-prod": dsm.allreduce(small[:10] * (1 + 1j), "prod"),
        "allreduce-bool": dsm.allreduce(ints > 0, "lor"),
        "gather": dsm.gather(b"x" * (dsm.rank * 700_000), root=0),
        "allgather": dsm.allgather(small[:dsm.rank + 1]),
        "scatter": dsm.scatter([r * 1.5 for r in range(dsm.size)] if dsm.rank == 0 else None),
        "alltoall": dsm.alltoall([(dsm.rank, q) for q in range(dsm.size)]),
        "scan": dsm.scan(small, "sum"),
        "exscan": dsm.exscan(ints, "sum"),
        "reduce_scatter": dsm.reduce_scatter(big[:999], "sum"),
    }
    sent = dsm.stats()["msgs_sent"] - sent
    large_sent = dsm.stats()["msgs_sent"]
    results["allreduce-big"] = dsm.allreduce(big, "sum")
    results["reduce"] = dsm.reduce(big, "sum", root=dsm.size - 1)
    large_sent = dsm.stats()["msgs_sent"] - large_sent
    for name, value in results.items():
        print("coll", name, digest(value))
    print("msgs sent", sent)
    print("large reduces sent", large_sent)
    x = results["allgather"] and dsm.allgather(small)
    if dsm.size == 3:           # recursive doubling adds rank 2's to rank 0's first
        print("order matters", not np.array_equal((x[0] + x[1]) + x[2], (x[0] + x[2]) + x[1]))


def trylock(dsm):
    """Rank 0 holds lock 5 while rank 1 tries it three ways; then rank 1
    takes it; releasing lock 7, held by no one, is refused."""
    lock = dsm.lock(5)
    sent = dsm.stats()["msgs_sent"]
    if dsm.rank == 0:
        lock.acquire()
    dsm.barrier()
    if dsm.rank == 1:
        print("while held", lock.acquire(blocking=False), lock.acquire(timeout=0.05),
              lock.locked())
    dsm.barrier()
    if dsm.rank == 0:
        lock.release()
    dsm.barrier()
    if dsm.rank == 1:
        print("when free", lock.acquire(blocking=False), lock.locked())
        lock.release()
        try:
            dsm.lock(7).release()
        except libdsm.LockError as e:
            print("LockError:", e)
    dsm.barrier()
    print("msgs sent", dsm.stats()["msgs_sent"] - sent)


def mismatch(dsm):
    try:
        if dsm.rank == 0:
            dsm.barrier()
        elif dsm.rank == 1:
            dsm.bcast(1, root=1)
        else:
            dsm.allreduce(1.0, "max")
    except libdsm.CollectiveError as e:
        print("CollectiveError:", e)
    print("after", dsm.allreduce(1, "sum"))


def bigmismatch(dsm):
    """Large reduces that disagree (a shape, a shape below the size where
    across hosts a reduce runs among all the ranks, a dtype, an op, a
    root), each a CollectiveError on every rank; then one that agrees."""
    big = np.arange(300_000, dtype="float64") + dsm.rank       # 2.4 MB
    odd = dsm.rank == 1
    cases = {
        "shape": lambda: dsm.allreduce(big[:-1] if odd else big, "sum"),
        # rank 0, a leader, below the size, the others above
        "straddling": lambda: dsm.allreduce(big[:100] if dsm.rank == 0 else big, "sum"),
        "dtype": lambda: dsm.allreduce(big.astype("float32") if odd else big, "sum"),
        "op": lambda: dsm.allreduce(big, "max" if odd else "sum"),
        "root": lambda: dsm.reduce(big, "sum", root=1 if odd else 0),
    }
    for name, call in cases.items():
        try:
            call()
            print("mismatch", name, "passed")
        except libdsm.CollectiveError as e:
            print("mismatch", name, "CollectiveError:", e)
    print("after", dsm.allreduce(big, "sum")[1])


def finalizing(dsm, big=None):
    if dsm.rank == 1:
        try:
            if big:
                dsm.allreduce(np.ones(300_000), "sum")
            else:
                dsm.bcast(5, root=1)
        except libdsm.CollectiveError as e:
            print("CollectiveError:", e)
            sys.exit(3)


def diecoll(dsm, where, how="kill"):
    """Rank 1 dies (how: kill) or stops (stop: SIGSTOP, for the heartbeat to
    find) while the others wait for it in `where` ("waiter": a thread of
    rank 1 waits on the Event the others set, then wait in a barrier)."""
    lock, event = dsm.lock(2), dsm.event("never set")
    page = dsm.array(512, "int64") if where == "page" else None
    if dsm.rank == 1 and where == "lock":
        lock.acquire()
    if dsm.rank == 1 and where == "page":
        print("read", int(page[0]))
    if dsm.rank == 1 and where == "waiter":       # it dies waiting, or about to
        threading.Thread(target=event.wait, daemon=True).start()
    try:
        # rank 1 can leave this barrier before the others do, and die while
        # they are still in it: that is waiting for it too
        dsm.barrier()
        if dsm.rank == 1:
            os.kill(os.getpid(), {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}[how])
        {"barrier": dsm.barrier, "lock": lock.acquire,
         "bcast": lambda: dsm.bcast(None, root=1), "event": event.wait,
         "waiter": lambda: (event.set(), dsm.barrier()),
         "page": lambda: (page.__setitem__(0, dsm.rank), dsm.barrier())}[where]()
        print("survived the", where)
    except libdsm.PeerError as e:
        print("PeerError peer=%s: %s" % (e.peer, e), flush=True)    # before any teardown
        raise


def main():
    dsm = libdsm.init(size="32M")
    what = sys.argv[1]
    if what in ("locks", "diecoll", "finalizing"):
        {"locks": locks, "diecoll": diecoll, "finalizing": finalizing}[what](dsm, *sys.argv[2:])
    else:
        {"calls": calls, "fork": fork, "where": where, "ckpt": ckpt,
         "colls": colls, "trylock": trylock, "mismatch": mismatch,
         "bigmismatch": bigmismatch}[what](dsm)
    dsm.finalize()


if __name__ == "__main__":
    main()
