"""share: one rank writes, the others read.

Rank 0 allocates a buffer, fills it and broadcasts the allocation; every rank
checks the bytes.  Then the last rank rewrites it and the others check again.

    ./dsmexec.py machine_file.example examples/share.py [nbytes]
"""
import sys

import libdsm


def pattern(seed, n):
    return bytes((seed * 31 + i * 7) % 251 for i in range(n))


def main():
    nbytes = int(sys.argv[1]) if len(sys.argv) > 1 else 3 * 4096 + 100
    with libdsm.init() as dsm:
        buf = None
        if dsm.rank == 0:
            buf = dsm.malloc(nbytes)
            buf.mem[:] = pattern(1, nbytes)
        buf = dsm.bcast(buf, root=0)
        first = bytes(buf.mem) == pattern(1, nbytes)
        dsm.barrier()
        writer = dsm.size - 1
        if dsm.rank == writer:
            buf.mem[:] = pattern(2, nbytes)
        dsm.barrier()
        second = bytes(buf.mem) == pattern(2, nbytes)
        print("rank %d: share %d bytes: written by rank 0 %s, rewritten by rank %d %s"
              % (dsm.rank, nbytes, "ok" if first else "WRONG", writer,
                 "ok" if second else "WRONG"))
        dsm.barrier()
        if dsm.rank == 0:
            dsm.free(buf)


if __name__ == "__main__":
    main()
