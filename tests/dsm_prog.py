"""One runtime program for the tests: run under dsmexec, it does what the
test asks and prints lines the test checks.

    dsm_prog.py SCENARIO [--rounds N] [--fail-rank R]
"""
import argparse
import ctypes
import faulthandler
import os
import struct
import sys
import time

import libdsm

Q = struct.Struct("<q")


def get(dsm, off):
    return Q.unpack_from(dsm.mem, off)[0]


def put(dsm, off, value):
    Q.pack_into(dsm.mem, off, value)


def own_pages(dsm, a):
    """Every rank writes its own page, then reads all of them."""
    ps = dsm.page_size
    for i in range(ps // 8):
        put(dsm, dsm.rank * ps + 8 * i, dsm.rank * 1000003 + i)
    dsm.barrier()
    bad = sum(get(dsm, r * ps + 8 * i) != r * 1000003 + i
              for r in range(dsm.size) for i in range(ps // 8))
    print("own_pages bad=%d" % bad)


def alternation(dsm, a):
    """Strict alternation on one shared counter: exact total."""
    counter, turn = 0, 8
    for _ in range(a.rounds):
        while get(dsm, turn) % dsm.size != dsm.rank:
            os.sched_yield()    # not our turn: on a loaded machine, let the rank whose turn it is run
        put(dsm, counter, get(dsm, counter) + 1)
        put(dsm, turn, get(dsm, turn) + 1)
    dsm.barrier()
    hot = dsm.hot_pages(3)
    print("alternation total=%d expected=%d hottest=%s" % (
        get(dsm, counter), a.rounds * dsm.size, hot[0][0] if hot else None))


def false_sharing(dsm, a):
    """All ranks write their own slot of the same pages at once: mutual
    concurrent write faults on pages homed everywhere."""
    npages = 2 * dsm.size
    for rnd in range(a.rounds):
        for p in range(npages):
            put(dsm, p * dsm.page_size + 8 * dsm.rank, rnd)
    dsm.barrier()
    bad = sum(get(dsm, p * dsm.page_size + 8 * r) != a.rounds - 1
              for p in range(npages) for r in range(dsm.size))
    print("false_sharing bad=%d" % bad)


def mutual(dsm, a):
    """Each rank reads and writes pages homed on the next rank that homes
    any (with share=host on several hosts, only the hosts' leaders do), all
    at once; ranks with the same target take turns through its pages."""
    ps, blk = dsm.page_size, dsm.block_pages
    homes = [dsm.page_home(p) for p in range(0, dsm.nbytes // ps)]
    leaders = sorted(set(homes))

    def target_of(r):
        return next((h for h in leaders if h > r), leaders[0])
    target = target_of(dsm.rank)
    sharing = [r for r in range(dsm.size) if target_of(r) == target]
    pages = [p for p, h in enumerate(homes) if h == target][sharing.index(dsm.rank)::len(sharing)]
    pages = pages[:a.rounds]
    for p in pages:
        put(dsm, p * ps + 8, get(dsm, p * ps) + dsm.rank + 1)
    dsm.barrier()
    bad = sum(get(dsm, p * ps + 8) != dsm.rank + 1 for p in pages)
    print("mutual pages=%d bad=%d blk=%d" % (len(pages), bad, blk))


def busy_owner(dsm, a):
    """Rank 0 is busy in pure Python, then in a GIL-holding C call, while
    rank 1 faults on rank 0's page; the fault must be served meanwhile.
    With --until-file, rank 0 stays busy until rank 1 made that file after
    its fault: the fault cannot have waited for rank 0's Python."""
    if dsm.rank == 0:
        put(dsm, 0, 4242)
    dsm.barrier()
    if dsm.rank == 0:
        end = time.monotonic() + a.busy
        while (not os.path.exists(a.until_file) if a.until_file
               else time.monotonic() < end):   # pure Python, never sleeps
            pass
        data = list(range(3000000, 0, -3))
        data.sort(key=None, reverse=False)  # one C call that keeps the GIL
        if a.gil_hold:                      # a long one: libc sleep() through PyDLL
            ctypes.PyDLL(None).sleep(int(a.gil_hold))
        print("busy done")
    elif dsm.rank == 1:
        t = time.monotonic()
        v = get(dsm, 0)
        print("busy_owner value=%d fault_s=%.3f busy_s=%.1f" % (v, time.monotonic() - t, a.busy))
        if a.until_file:
            open(a.until_file, "w").close()
    dsm.barrier()


def barrier_loop(dsm, a):
    """Barriers for --busy seconds; each rank prints its pid first (a test
    stops one of them)."""
    print("pid=%d" % os.getpid(), flush=True)
    dsm.barrier()
    end = time.monotonic() + a.busy
    n = 0
    while time.monotonic() < end:
        dsm.barrier()
        n += 1
    print("barrier_loop rounds=%d" % n)


def stuck(dsm, a):
    """Rank 0 sits in one GIL-holding C call for --busy seconds while the
    others loop on barriers (a test stops one of them).  Each rank prints
    its pid past the barrier: rank 0 then goes straight into the call."""
    dsm.barrier()
    print("pid=%d" % os.getpid(), flush=True)
    if dsm.rank == 0:
        ctypes.PyDLL(None).sleep(int(a.busy))
        print("stuck rank 0 came back")
    else:
        end = time.monotonic() + a.busy
        while time.monotonic() < end:
            time.sleep(0.01)
    dsm.barrier()


def big(dsm, a):
    """A big region: every rank writes pages spread over all of it."""
    npages = dsm.nbytes // dsm.page_size
    stride = npages // 64
    mine = [p for p in range(dsm.rank, npages, stride)]
    for p in mine:
        put(dsm, p * dsm.page_size, p + 1)
    dsm.barrier()
    bad = sum(get(dsm, p * dsm.page_size) != p + 1
              for r in range(dsm.size) for p in range(r, npages, stride))
    print("big nbytes=%d pages_checked=%d bad=%d runs=%d" % (
        dsm.nbytes, len(mine) * dsm.size, bad, dsm.stats()["vma_runs"]))


def faulthandler_displaced(dsm, a):
    """faulthandler.enable() after init replaces our handler; the next entry
    point must put it back."""
    faulthandler.enable()
    dsm.barrier()
    other = (dsm.rank + 1) % dsm.size
    p = next(p for p in range(dsm.nbytes // dsm.page_size) if dsm.page_home(p) == other)
    put(dsm, p * dsm.page_size + 8 * dsm.rank, 7)
    dsm.barrier()
    print("displaced ok=%d" % (get(dsm, p * dsm.page_size + 8 * dsm.rank) == 7))


def raises(dsm, a):
    dsm.barrier()
    if dsm.rank == a.fail_rank:
        raise RuntimeError("rank %d fails on purpose" % dsm.rank)
    dsm.barrier()


def segv(dsm, a):
    dsm.barrier()
    if dsm.rank == a.fail_rank:
        ctypes.string_at(8)                 # a genuine crash outside the region
    dsm.barrier()


def no_finalize(dsm, a):
    dsm.barrier()
    if dsm.rank == a.fail_rank:
        sys.exit(0)
    dsm.barrier()
    dsm.finalize()


def messages(dsm, a):
    """Messages per fault: rank 1 reads then writes pages homed on rank 0."""
    if dsm.rank == 1:
        pages = [p for p in range(dsm.nbytes // dsm.page_size) if dsm.page_home(p) == 0]
        pages = pages[:a.rounds]
        before = dsm.stats()
        for p in pages:
            get(dsm, p * dsm.page_size)
            put(dsm, p * dsm.page_size, 1)
        s = dsm.stats()
        faults = (s["read_faults"] + s["write_faults"]) - (before["read_faults"] + before["write_faults"])
        sent = s["msgs_sent"] - before["msgs_sent"]
        opened = s["opened_by_waiter"] - before["opened_by_waiter"]
        print("messages faults=%d sent=%d opened_by_waiter=%d" % (faults, sent, opened))
    dsm.barrier()


def streaming(dsm, a):
    """Rank 1 reads 4 MiB rank 0 wrote: read-ahead makes few faults; after
    dsm.prefetch, reading or writing makes none."""
    import numpy as np
    arrs = [dsm.array(1 << 19, "int64") for _ in range(3)]
    if dsm.rank == 0:
        for i, arr in enumerate(arrs):
            arr[:] = np.arange(arr.size) * (i + 1)
    dsm.barrier()
    if dsm.rank == 1:
        s0 = dsm.stats()
        ok = all(int(arr.sum()) == (i + 1) * arr.size * (arr.size - 1) // 2
                 for i, arr in enumerate(arrs[:1]))
        s1 = dsm.stats()
        dsm.prefetch(arrs[1])
        s2 = dsm.stats()
        arrs[1].sum()
        s3 = dsm.stats()
        dsm.prefetch(arrs[2], write=True)
        s4 = dsm.stats()
        arrs[2][:] = 5
        s5 = dsm.stats()

        def faults(x, y):
            return (y["read_faults"] + y["write_faults"]) - (x["read_faults"] + x["write_faults"])
        print("streaming pages=%d ok=%d seq_faults=%d prefetched=%d after_prefetch_faults=%d "
              "after_write_prefetch_faults=%d early=%d msgs=%d" % (
                  arrs[0].nbytes // dsm.page_size, ok, faults(s0, s1),
                  s1["pages_prefetched"] - s0["pages_prefetched"], faults(s2, s3),
                  faults(s4, s5), s1["readahead_early"] - s0["readahead_early"],
                  s1["msgs_recv"] - s0["msgs_recv"]))
    dsm.barrier()
    if dsm.rank == 0:
        print("streaming writes seen=%d" % int((arrs[2] == 5).all()))


def bcast_values(dsm, a):
    """Every rank is root once, with values of several kinds."""
    import numpy as np
    ok = True
    for root in range(dsm.size):
        value = {"root": root, "arr": np.arange(root + 5), "text": "x" * 100000 * root}
        got = dsm.bcast(value if dsm.rank == root else None, root=root)
        ok &= got["root"] == root and list(got["arr"]) == list(range(root + 5)) \
            and got["text"] == "x" * 100000 * root
    # writes made by the root before bcast are visible after it
    alloc = dsm.malloc(64) if dsm.rank == 0 else None
    if dsm.rank == 0:
        put(dsm, alloc.offset, 9876)
    alloc = dsm.bcast(alloc)
    ok &= get(dsm, alloc.offset) == 9876
    print("bcast_values ok=%d" % ok)


def malloc_disjoint(dsm, a):
    """Allocations from every rank at once never overlap; free coalesces."""
    import random
    rnd = random.Random(dsm.rank)
    mine = []
    for i in range(a.rounds):
        align = rnd.choice([8, 16, 64, 4096])
        alloc = dsm.malloc(rnd.randint(1, 3000), align=align)
        mine.append((alloc, align))
        alloc.mem[:] = bytes([dsm.rank + 1]) * alloc.nbytes
    everyone = [dsm.bcast(mine if dsm.rank == r else None, root=r) for r in range(dsm.size)]
    spans = sorted((al.offset, al.offset + al.nbytes) for lst in everyone for al, _ in lst)
    overlap = sum(1 for x, y in zip(spans, spans[1:]) if x[1] > y[0])
    misaligned = sum(1 for lst in everyone for al, align in lst if al.offset % align)
    wrong = sum(1 for r, lst in enumerate(everyone) for al, _ in lst
                if bytes(al.mem) != bytes([r + 1]) * al.nbytes)
    dsm.barrier()
    for al, _ in mine:
        dsm.free(al)
    dsm.barrier()
    free, largest, extents = dsm._heap.usage()
    print("malloc_disjoint n=%d overlap=%d misaligned=%d wrong=%d whole=%d" % (
        len(spans), overlap, misaligned, wrong, free == largest == dsm.nbytes and extents == 1))


def lock_invariant(dsm, a):
    """Fields updated together under a lock are never seen inconsistent."""
    f = dsm.array(3, "int64")             # a, b = 2a, c = a + b
    lock = dsm.lock(7)
    broken = 0
    for _ in range(a.rounds):
        with lock:
            x = int(f[0]) + 1
            f[0] = x
            f[1] = 2 * x
            f[2] = 3 * x
        with lock:
            broken += not (f[1] == 2 * f[0] and f[2] == f[0] + f[1])
    dsm.barrier()
    print("lock_invariant a=%d expected=%d broken=%d" % (f[0], a.rounds * dsm.size, broken))


def ring_full(dsm, a):
    """Four threads per rank at once: strided numpy updates (which fault
    with the GIL released) of every page, homed here and elsewhere, bulk
    prefetches, and locks homed on every rank; a barrier between rounds.
    Built with a tiny ring (DSM_RING_CAP=2), this keeps the ring to the comm
    thread full."""
    import threading
    import numpy as np
    threads, width = 4, 8
    rows = 64 * dsm.size
    arr = dsm.array((rows, dsm.page_size // 8), "int64")       # one page a row
    counters = dsm.array(dsm.size, "int64")

    def work(t):
        col = (dsm.rank * threads + t) * width
        dsm.prefetch(arr[:, col:col + width])
        np.add(arr[:, col:col + width], 1, out=arr[:, col:col + width])
        for k in range(dsm.size):                 # lock k is homed on rank k
            with dsm.lock(k):
                counters[k] += 1

    rounds = 0
    # a.rounds at least; with --until-full, on (to ten times that) until some
    # rank's thread found the ring full: how soon depends on the load
    while rounds < a.rounds or (a.until_full and rounds < 10 * a.rounds and
                                not dsm.allreduce(dsm.stats()["ring_full"])):
        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        dsm.barrier()
        rounds += 1
    used = arr[:, :dsm.size * threads * width]
    bad = int(np.count_nonzero(used != rounds))
    want = rounds * threads * dsm.size
    print("ring_full bad=%d counters=%s expected=%d ring_full=%d"
          % (bad, counters.tolist(), want, dsm.stats()["ring_full"]))


def collectives(dsm, a):
    """allreduce, reduce, gather and allgather against numpy, with inputs
    every rank can compute for every rank; then mismatched calls."""
    import numpy as np

    def inputs(r, dtype, shape):
        rng = np.random.default_rng(1000 + r)
        return (rng.integers(-50, 50, size=shape)).astype(dtype)

    ranks = range(dsm.size)
    bad = []
    for dtype, shape in (("float64", (8,)), ("int32", (3, 4)), ("uint8", (5,)),
                         ("float32", (2, 2, 2)), ("int64", ())):
        stack = np.stack([inputs(r, dtype, shape) for r in ranks])
        mine = inputs(dsm.rank, dtype, shape)
        for op, fn in (("sum", np.sum), ("prod", np.prod), ("min", np.min), ("max", np.max)):
            want = fn(stack, axis=0).astype(dtype)
            got = dsm.allreduce(mine, op=op)
            if not (isinstance(got, np.ndarray) and got.dtype == want.dtype and
                    np.array_equal(got, want)):
                bad.append("allreduce %s %s" % (dtype, op))
            got = dsm.reduce(mine, op=op, root=dsm.size - 1)
            if (dsm.rank == dsm.size - 1) != (got is not None) or \
                    (got is not None and not np.array_equal(got, want)):
                bad.append("reduce %s %s" % (dtype, op))
    total = dsm.allreduce(dsm.rank + 1)
    if total != dsm.size * (dsm.size + 1) // 2 or not isinstance(total, int):
        bad.append("allreduce of ints gave %r" % (total,))
    biggest = dsm.allreduce(float(dsm.rank) / 2, op="max")
    if biggest != (dsm.size - 1) / 2 or not isinstance(biggest, float):
        bad.append("allreduce of floats gave %r" % (biggest,))
    values = [{"rank": r, "tag": "x" * r} for r in ranks]
    if dsm.allgather(values[dsm.rank]) != values:
        bad.append("allgather")
    got = dsm.gather(values[dsm.rank], root=0)
    if got != (values if dsm.rank == 0 else None):
        bad.append("gather")
    print("collectives bad=%s" % (bad or 0))
    shape = (3,) if dsm.rank == 0 else (4,)
    print("err shape: " + expect_error(libdsm.CollectiveError,
                                       lambda: dsm.allreduce(np.zeros(shape))))
    print("err op: " + expect_error(libdsm.CollectiveError, lambda: dsm.allreduce(
        1.0, op="sum" if dsm.rank else "max")))
    print("err kind: " + expect_error(libdsm.CollectiveError, lambda: dsm.allgather(1)
                                      if dsm.rank else dsm.barrier()))
    print("err dtype: " + expect_error(TypeError, lambda: dsm.allreduce(np.array(["a"]))))
    dsm.barrier()
    print("after errors sum=%d" % dsm.allreduce(1))


def slots(dsm, a):
    """False sharing: every rank writes its own 8-byte slot of the same
    pages each round, a barrier between rounds; every round checks the last."""
    import numpy as np
    pages = 4
    arr = dsm.array((pages, dsm.page_size // 8), "int64")
    bad = 0
    for rnd in range(1, a.rounds + 1):
        arr[:, dsm.rank] = rnd
        dsm.barrier()
        bad += int(np.count_nonzero(arr[:, :dsm.size] != rnd))
        dsm.barrier()
    st = dsm.stats()
    print("slots bad=%d twins=%d diffs=%d diff_bytes=%d" % (bad, st["twins"], st["diffs"],
                                                            st["diff_bytes"]))


def racy(dsm, a):
    """Release mode: rank 0 keeps rewriting one aligned word, unsynchronised,
    while a thread of it keeps releasing a lock (so its notices name the
    page); rank 1 takes that lock to drop its copy, then reads the word."""
    import threading
    values = (0x5555555555555555, -0x5555555555555556, 0x0123456789ABCDEF)
    word = dsm.array(dsm.page_size // 8, "int64")
    lock = dsm.lock(5)
    seen, bad = set(), 0
    dsm.barrier()
    if dsm.rank == 0:
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set():
                word[0] = values[i % 3]
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        for _ in range(a.rounds):
            with lock:
                pass
        stop.set()
        t.join()
    elif dsm.rank == 1:
        for _ in range(a.rounds):
            with lock:
                v = int(word[0])
            seen.add(v)
            bad += v not in values + (0,)
    dsm.barrier()
    print("racy rank=%d bad=%d distinct=%d" % (dsm.rank, bad, len(seen)))


def expect_error(kind, fn):
    try:
        fn()
    except kind as e:
        return str(e)
    return "NO ERROR"


def api_errors(dsm, a):
    """Every API error case, one line each."""
    lock = dsm.lock(2)
    lock.acquire()
    lock.release()
    print("err release: " + expect_error(libdsm.LockError, lock.release))
    print("err lock range: " + expect_error(ValueError, lambda: dsm.lock(dsm.nlocks)))
    print("err exhausted: " + expect_error(MemoryError, lambda: dsm.malloc(dsm.nbytes + 1)))
    print("err align: " + expect_error(ValueError, lambda: dsm.malloc(8, align=3)))
    print("err root: " + expect_error(ValueError, lambda: dsm.bcast(1, root=dsm.size)))
    dsm.barrier()
    mismatch = (lambda: dsm.barrier()) if dsm.rank == 0 else (lambda: dsm.bcast(0, root=0))
    print("err mismatch: " + expect_error(libdsm.CollectiveError, mismatch))
    dsm.barrier()
    print("err free: " + expect_error(ValueError, lambda: dsm.free(libdsm.Allocation(0, 16))))
    dsm.barrier()               # before rank 0 allocates offset 0 for the array below
    shape = (4, 4) if dsm.rank == 0 else (4, 5)
    print("err array: " + expect_error(libdsm.CollectiveError, lambda: dsm.array(shape, "int32")))


SCENARIOS = {f.__name__: f for f in (own_pages, alternation, false_sharing, mutual, busy_owner,
                                     big, faulthandler_displaced, raises, segv, no_finalize,
                                     messages, streaming, bcast_values, malloc_disjoint, lock_invariant,
                                     api_errors, ring_full, collectives, barrier_loop, stuck,
                                     slots, racy)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--until-full", action="store_true",
                   help="ring_full: go on until some thread found the ring full")
    p.add_argument("--fail-rank", type=int, default=1)
    p.add_argument("--busy", type=float, default=2.0)
    p.add_argument("--gil-hold", type=float, default=0.0)
    p.add_argument("--until-file", help="busy_owner: rank 0 is busy until rank 1 makes it")
    a = p.parse_args()
    dsm = libdsm.init()
    SCENARIOS[a.scenario](dsm, a)
    if a.scenario != "no_finalize":
        dsm.finalize()


if __name__ == "__main__":
    main()
