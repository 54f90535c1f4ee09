"""double_touch: every rank touches the same page.

The ranks take turns: rank r adds r + 1 to one integer at the start of the
region, then everyone meets at a barrier.  The page moves to each writer in
turn, and at the end every rank prints the same value, n (n + 1) / 2.

    ./dsmexec.py machine_file.example examples/double_touch.py
"""
import struct

import libdsm

INT = struct.Struct("<q")


def main():
    with libdsm.init() as dsm:
        for turn in range(dsm.size):
            if turn == dsm.rank:
                value = INT.unpack_from(dsm.mem, 0)[0]
                INT.pack_into(dsm.mem, 0, value + dsm.rank + 1)
            dsm.barrier()
        value = INT.unpack_from(dsm.mem, 0)[0]
        print("rank %d of %d: integer value: %d" % (dsm.rank, dsm.size, value))


if __name__ == "__main__":
    main()
