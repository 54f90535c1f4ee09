"""What test_checkpoint asks of a checkpoint, one rank's part.

    ckpt_prog.py save     state with an array and an Allocation on the region
                          (by reference), checkpointed twice, then changed
    ckpt_prog.py load     prints what this rank got back
    ckpt_prog.py sparse   a 16 MB array (each rank its half) in a region
                          otherwise never touched, checkpointed; restored,
                          prints the array's sha256 and the bytes restored
    ckpt_prog.py layout   an array with row_block homes and a System V
                          segment, filled and checkpointed; restored, prints
                          the homes of the array's pages and what both hold
    ckpt_prog.py fail     checkpointed, then rank 1 exits with status 3 (every run)
"""
import hashlib
import itertools
import sys

import numpy as np

import libdsm
from libdsm import sysv


def main():
    with libdsm.init() as dsm:
        st = dsm.restored
        if sys.argv[1] == "sparse":
            sparse(dsm)
        elif sys.argv[1] == "layout":
            layout(dsm)
        elif sys.argv[1] == "fail":
            print("run %s" % ("restored" if st is not None else "fresh"), flush=True)
            dsm.checkpoint(dsm.rank)
            if dsm.rank == 1:
                sys.exit(3)
        elif sys.argv[1] == "save":
            a = dsm.array((3000,), "int64")
            alloc = dsm.bcast(dsm.malloc(64) if dsm.rank == 0 else None)
            rows = dsm.row_block(3000, 8)
            a[rows] = np.arange(rows.start, rows.stop) * (dsm.rank + 1)
            if dsm.rank == 0:
                alloc.mem[:5] = b"first"
            dsm.checkpoint({"a": a, "alloc": alloc, "rank": dsm.rank})
            a[rows] = -1                # what the second checkpoint holds
            if dsm.rank == 0:
                alloc.mem[:5] = b"saved"
            dsm.checkpoint({"a": a, "alloc": alloc, "rank": dsm.rank, "second": True})
            a[rows] = -2                # lost: after the last checkpoint
            dsm.barrier()
        elif st is None:
            zero = not np.frombuffer(dsm.mem, np.uint8).any()
            print("state None, region zero %s, first malloc at %d" % (zero, dsm.malloc(8).offset))
        else:
            a, alloc = st["a"], st["alloc"]
            on_region = 0 <= a.__array_interface__["data"][0] - dsm.base < dsm.nbytes
            print("state rank %d second %s sum %d on_region %s alloc %r" % (
                st["rank"], st.get("second"), int(a.sum()), on_region,
                bytes(alloc.mem[:5]).decode()))
            print("stats checkpoints %d restores %d" % (dsm.stats()["checkpoints"],
                                                         dsm.stats()["restores"]))
        dsm.barrier()


def sparse(dsm):
    a = dsm.restored
    if a is None:
        a = dsm.array((1 << 21,), "int64", homes="row_block")
        rows = dsm.row_block(a.shape[0], 8)
        a[rows] = np.arange(rows.start, rows.stop) * 7 + 1
        dsm.barrier()
        dsm.checkpoint(a)
    s = dsm.stats()
    print("sparse %s sha256 %s saved %d restored %d" % (
        "restored" if dsm.restored is not None else "fresh",
        hashlib.sha256(np.asarray(a).tobytes()).hexdigest()[:16],
        s["checkpoint_bytes"], s["restore_bytes"]))

def layout(dsm):
    """Placed homes and a System V segment through a checkpoint: the homes of
    the array's pages, its sum and the segment's first bytes, printed."""
    a, key = dsm.restored, 20261207
    if a is None:
        a = dsm.array((1 << 16,), "int64", homes="row_block")    # 512 KiB: 128 pages
        rows = dsm.row_block(a.shape[0], 8)
        a[rows] = np.arange(rows.start, rows.stop)
        seg = sysv.shmat(sysv.shmget(key, 8192, sysv.IPC_CREAT | 0o600))
        if dsm.rank == 0:
            seg.mem[:6] = b"sysv-1"
        dsm.barrier()
        dsm.checkpoint(a)
    else:
        seg = sysv.shmat(sysv.shmget(key, 8192))    # no IPC_CREAT: it must be there
    offset = a.__array_interface__["data"][0] - dsm.base
    pages = range(dsm.page_of(offset), dsm.page_of(offset + a.nbytes - 1) + 1)
    homes = [dsm.page_home(p) for p in pages]
    runs = ",".join("%d*%d" % (home, len(list(same))) for home, same in itertools.groupby(homes))
    print("layout %s homes %s sum %d segment %s" % (
        "restored" if dsm.restored is not None else "fresh", runs, int(a.sum()),
        bytes(seg.mem[:6]).decode(errors="replace")))


if __name__ == "__main__":
    main()
