"""The scenarios that must hold in every sharing mode (DSM_SHARE=rank and
host, and host-shared across virtual hosts): run under dsmexec, each prints
one line per rank that tests/test_share_modes.py checks.

    modes_prog.py mp|sb|threads|stripes [--rounds N]

  mp       message passing: rank 0 writes data, then a flag on another page;
           the others wait for the flag and must see the data (SC and TSO)
  sb       store buffering between rank 0 and the last rank: each stores to
           its own page, then loads the other's; both loading the old value
           is forbidden under sequential consistency (allowed by x86-TSO, so
           only run across hosts or per rank)
  threads  4 threads per rank fault concurrently on interleaved pages of one
           array, each writing its own; then every rank checks all of it
  stripes  a 4 GiB region: every rank writes a stripe of pages spread over
           all of it, then reads every other rank's
  crossing rank 0 writes every page of an array; then the ranks of the last
           host read it, one after the other (from the first, or with
           --last-first from the last): each prints the pages it saw
           and its counts over its reads (the ranks of the first hosts: over
           all of them)
  notices  release mode, 2 hosts x 2 ranks: the last rank reads every page
           of an array; then rank 1 (host 0, not its leader) writes two
           rows under a lock, and the last rank takes the lock until it
           sees them and reads the array again: it prints what it saw, and
           its faults and the copies it dropped
  twins    release mode with a small DSM_TWIN_LIMIT: each rank writes its
           band of a 16 MiB array, more pages than the twins may hold,
           twice, a barrier after each; every rank then checks all of it
           and prints its twin counts and the homes moved
"""
import argparse
import threading

import numpy as np

import libdsm

PAGE_WORDS = 512


def mp(dsm, a):
    data = dsm.array((a.rounds, PAGE_WORDS), "int64")
    flag = dsm.array((a.rounds, PAGE_WORDS), "int64")
    dsm.barrier()
    bad = 0
    for i in range(a.rounds):
        if dsm.rank == 0:
            data[i, 0] = 1000 + i
            flag[i, 0] = 1
        else:
            while flag[i, 0] == 0:
                pass
            bad += int(data[i, 0]) != 1000 + i
    dsm.barrier()
    print("mp bad=%d" % bad)


def sb(dsm, a):
    """Each round on fresh pages, homed apart by the default round-robin."""
    x = dsm.array((a.rounds, PAGE_WORDS), "int64")
    y = dsm.array((a.rounds, PAGE_WORDS), "int64")
    seen = dsm.array((a.rounds, 2), "int64")
    last = dsm.size - 1
    for i in range(a.rounds):
        dsm.barrier()
        if dsm.rank == 0:
            x[i, 0] = 1
            seen[i, 0] = y[i, 0]
        elif dsm.rank == last:
            y[i, 0] = 1
            seen[i, 1] = x[i, 0]
    dsm.barrier()
    both_old = int(np.count_nonzero((seen[:, 0] == 0) & (seen[:, 1] == 0)))
    print("sb forbidden=%d rounds=%d" % (both_old, a.rounds))


def threads(dsm, a):
    nthreads, per = 4, 8
    pages = dsm.size * nthreads * per
    arr = dsm.array((pages, PAGE_WORDS), "int64")
    dsm.barrier()

    def work(t):
        me = dsm.rank * nthreads + t
        for p in range(me, pages, dsm.size * nthreads):     # interleaved with every thread's
            arr[p, :] = p * 7 + 1
    ts = [threading.Thread(target=work, args=(t,)) for t in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dsm.barrier()
    want = np.arange(pages, dtype="int64")[:, None] * 7 + 1
    print("threads bad=%d" % int(np.count_nonzero(np.asarray(arr) != want)))


def stripes(dsm, a):
    rows = dsm.nbytes // (PAGE_WORDS * 8) - 1024        # room for the allocator's own
    arr = dsm.array((rows, PAGE_WORDS), "int64")
    step = rows // 64
    mine = range(dsm.rank, 64 * dsm.size, dsm.size)
    for k in mine:
        arr[(k * step // dsm.size) % rows, :] = k + 1
    dsm.barrier()
    bad = sum(int(arr[(k * step // dsm.size) % rows, PAGE_WORDS - 1]) != k + 1
              for k in range(64 * dsm.size))
    print("stripes bad=%d span=%d" % (bad, arr.nbytes))


def crossing(dsm, a):
    """Run with DSM_READAHEAD=1 (a fault fetches its page only) and no
    heartbeats, so that the counts are the reads' own."""
    rows = 64
    arr = dsm.array((rows, PAGE_WORDS), "int64")
    start = arr.__array_interface__["data"][0] - dsm.base
    pages = dsm.page_of(start + arr.nbytes - 1) - dsm.page_of(start) + 1
    keys = ("pages_sent", "msgs_sent", "host_maps", "read_faults", "invalidations",
            "host_msgs")
    if dsm.rank == 0:
        arr[:, :] = np.arange(rows)[:, None] + 1
    before_all = dsm.stats()    # before the barrier: a reader may leave it first
    dsm.barrier()
    readers = range(dsm.size // 2, dsm.size)
    for r in reversed(readers) if a.last_first else readers:
        if r == dsm.rank:
            before = dsm.stats()
            got = np.asarray(arr) != (np.arange(rows) + 1)[:, None]
            after = dsm.stats()
            bad = int(np.count_nonzero(got.any(axis=1)))
            print("crossing pages=%d bad=%d %s" % (pages, bad, " ".join(
                "%s=%d" % (k, after[k] - before[k]) for k in keys)))
        dsm.barrier()
    if dsm.rank < dsm.size // 2:
        after = dsm.stats()
        print("crossing pages=%d %s" % (pages, " ".join(
            "%s=%d" % (k, after[k] - before_all[k]) for k in keys)))


def notices(dsm, a):
    """Rows 0 and 1 of the array are pages homed on different hosts (run
    with DSM_BLOCK_PAGES=1 and DSM_READAHEAD=1): the last rank's host drops
    the one it does not home once the lock's notices name it, and keeps
    every other page.  Each row is first written by its page's home, so
    that no home moves.  The last rank prints its counts over the wait for
    the lock (`lock_`) and over its second read of the array, and the
    homes of rows 0 and 1 and of the flag's page."""
    rows = 64
    arr = dsm.array((rows, PAGE_WORDS), "int64")
    flag = dsm.array(PAGE_WORDS, "int64")
    lock = dsm.lock(5)
    last = dsm.size - 1
    keys = ("read_faults", "host_maps", "invalidations")
    start = arr.__array_interface__["data"][0] - dsm.base
    for r in range(rows):
        if dsm.page_home(dsm.page_of(start + r * PAGE_WORDS * 8)) == dsm.rank:
            arr[r, :] = r + 1
    dsm.barrier()
    if dsm.rank == last:
        bad = int(np.count_nonzero(np.asarray(arr) != (np.arange(rows) + 1)[:, None]))
    dsm.barrier()
    if dsm.rank == 1:
        with lock:
            arr[0:2, :] = -1
            flag[0] = 1
    elif dsm.rank == last:
        before = dsm.stats()
        seen = 0
        while not seen:
            with lock:
                seen = int(flag[0])
        waited = dsm.stats()
        want = np.arange(rows)[:, None] + 1
        want[0:2] = -1
        bad += int(np.count_nonzero(np.asarray(arr) != want))
        after = dsm.stats()
        homes = [dsm.page_home(dsm.page_of(start + r * PAGE_WORDS * 8)) for r in (0, 1)]
        homes.append(dsm.page_home(dsm.page_of(flag.__array_interface__["data"][0] - dsm.base)))
        print("notices pages=%d bad=%d homes=%s %s %s" % (
            dsm.page_of(start + arr.nbytes - 1) - dsm.page_of(start) + 1, bad,
            ",".join(map(str, homes)),
            " ".join("lock_%s=%d" % (k, waited[k] - before[k]) for k in keys),
            " ".join("%s=%d" % (k, after[k] - waited[k]) for k in keys)))
    dsm.barrier()


def twins(dsm, a):
    rows = 4096                 # a page a row
    arr = dsm.array((rows, PAGE_WORDS), "int64")
    band = rows // dsm.size
    mine = slice(dsm.rank * band, (dsm.rank + 1) * band)
    for k in range(2):
        arr[mine, :] = np.arange(rows)[mine, None] + 1 + k * rows
        dsm.barrier()
    want = np.arange(rows)[:, None] + 1 + rows
    bad = int(np.count_nonzero((np.asarray(arr) != want).any(axis=1)))
    st = dsm.stats()
    print("twins bad=%d %s" % (bad, " ".join(
        "%s=%d" % (k, st[k]) for k in ("twins", "twin_peak", "early_flushes", "homes_moved"))))
    dsm.barrier()


SCENARIOS = {"mp": mp, "sb": sb, "threads": threads, "stripes": stripes,
             "crossing": crossing, "notices": notices, "twins": twins}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--last-first", action="store_true",
                   help="crossing: the last host's ranks read from the last one down")
    a = p.parse_args()
    with libdsm.init() as dsm:
        SCENARIOS[a.scenario](dsm, a)


if __name__ == "__main__":
    main()
