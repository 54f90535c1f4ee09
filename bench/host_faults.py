"""Read faults across hosts with host-shared memory: 2 virtual hosts of 2
ranks.  Rank 0 (host 0) writes PAGES pages; then the two ranks of host 1
read them one after the other, in both orders: the leader first (rank 2,
then rank 3), and the other rank first (rank 3 asks its leader, then rank
2 finds them installed).  Read-ahead is off, so a fault is one page.  It
prints, per order, the messages all ranks sent per fault taken on host 1,
those of them between hosts and those within host 1 (DSM_HREQ,
DSM_HGRANT: a rank and its leader), and how many times each page left
host 0 (once per host: 1.00).  The
per-rank run is the reference (every rank its own copy: a page leaves
host 0 for each reader).  Counts, not times: run it anywhere.  Rank 0
also prints a BENCH line per order for bench/run.py.

    DSM_SHARE=host DSM_VHOSTS=2 ./dsmexec.py -n 4 bench/host_faults.py
    DSM_SHARE=rank ./dsmexec.py -n 4 bench/host_faults.py          (reference)
"""
import json
import os

import numpy as np

import libdsm

PAGES = 200
WORDS = 512
KEYS = ("msgs_sent", "pages_sent", "read_faults", "host_maps", "host_msgs")
SHARE = os.environ.get("DSM_SHARE", "rank")
MODE = "share=%s, vhosts=%s" % (SHARE, os.environ.get("DSM_VHOSTS", "1"))


def deltas(dsm, before):
    now = dsm.stats()
    return {k: now[k] - before[k] for k in KEYS}


def turns(dsm, arr, readers, read):
    """`readers` take turns (a barrier each), reading every page if `read`:
    the counts over the turns, summed over all ranks, rank 0's apart, and
    the rows read wrong."""
    before = dsm.stats()
    dsm.barrier()               # a reader leaves the gather before rank 0, its root
    bad = 0
    for r in readers:
        if read and r == dsm.rank:
            bad = int(np.count_nonzero(np.asarray(arr)[:, 0] != np.arange(PAGES) + 1))
        dsm.barrier()
    got = dsm.gather((deltas(dsm, before), bad), root=0)
    if dsm.rank != 0:
        return None
    return {k: sum(d[k] for d, _ in got) for k in KEYS}, got[0][0], sum(b for _, b in got)


def one_order(dsm, readers):
    """Rank 0 writes every page of a fresh array, then `readers` read them
    in turn; the same turns without the reads first, for the barriers'
    messages."""
    arr = dsm.array((PAGES, WORDS), "int64")
    if dsm.rank == 0:
        arr[:, :] = np.arange(PAGES)[:, None] + 1
    dsm.barrier()
    idle = turns(dsm, arr, readers, False)
    busy = turns(dsm, arr, readers, True)
    if dsm.rank != 0:
        return
    (total, zero, bad), (quiet, _, _) = busy, idle
    faults = total["read_faults"] + total["host_maps"]
    sent = total["msgs_sent"] - quiet["msgs_sent"]
    within = total["host_msgs"] - quiet["host_msgs"]
    print("%s: ranks %d then %d read %d pages written on host 0: %d faults (%d served by "
          "the host's copy, no message), %.2f messages per fault (%.2f between hosts, %.2f "
          "within one), each page left rank 0 %.2f times%s"
          % (MODE, readers[0], readers[1], PAGES, faults, total["host_maps"],
             sent / max(faults, 1), (sent - within) / max(faults, 1), within / max(faults, 1),
             zero["pages_sent"] / PAGES, " WRONG: %d bad rows" % bad if bad else ""))
    print("BENCH " + json.dumps({
        "row": "faults across hosts %s %s" % (SHARE, "leader" if readers[0] == 2 else "other"),
        "per_fault": sent / max(faults, 1), "between_per_fault": (sent - within) / max(faults, 1),
        "crossings": zero["pages_sent"] / PAGES, "bad": bad}))


def main():
    dsm = libdsm.init(readahead=1, heartbeat_s=0)
    for readers in ([2, 3], [3, 2]):
        one_order(dsm, readers)
    dsm.finalize()


if __name__ == "__main__":
    main()
