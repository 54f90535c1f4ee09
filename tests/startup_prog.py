"""A libdsm program for the start-up tests: say where it listens, wait if told, then join.

    startup_prog.py [--hold RANK:PATH]

Prints ``listener HOST PORT`` (its peer listener), waits for PATH to exist
if it is rank RANK, then init(), a barrier, finalize(), and prints ``ok``.
"""
import os
import sys
import time

import libdsm
import libdsm_services.rank


def main():
    ctx = libdsm_services.rank.CONTEXT
    print("listener %s %d" % ctx.listener.getsockname(), flush=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--hold":
        rank, _, path = sys.argv[2].partition(":")
        while int(rank) == ctx.rank and not os.path.exists(path):
            time.sleep(0.02)        # not held past dsmexec: the watch thread ends the rank
    with libdsm.init() as dsm:
        dsm.barrier()
        print("ok", flush=True)


if __name__ == "__main__":
    main()
