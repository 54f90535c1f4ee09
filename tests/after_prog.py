"""DSM memory touched where it may not be, on real ranks
(tests/test_after.py): after finalize(), and in a child forked after
init().  argv[1] names the scenario, argv[2] the rank that misbehaves."""
import os
import sys

import libdsm


def after_finalize(dsm, culprit):
    """The last rank writes the array (its pages stay there); after
    finalize, the culprit reads it: fatal on every rank alike."""
    a = dsm.array(4 * dsm.page_size, "uint8")
    if dsm.rank == dsm.size - 1:
        a[:] = 1
    dsm.barrier()
    dsm.finalize()
    print("finalized", flush=True)
    if dsm.rank == culprit:
        print("sum after finalize %d" % a.sum(), flush=True)


def forked(dsm, culprit):
    """A child forked after init: its calls refuse, its touches are fatal."""
    a = dsm.array(4 * dsm.page_size, "uint8")
    if dsm.rank == dsm.size - 1:
        a[:] = 1
    dsm.barrier()
    if dsm.rank == culprit:
        pid = os.fork()
        if pid == 0:
            try:
                dsm.barrier()
            except libdsm.StateError as e:
                print("child call: %s" % e, flush=True)
            print("child sum %d" % a.sum(), flush=True)
            os._exit(0)
        print("child status %d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    dsm.barrier()
    print("parent sum %d" % a.sum(), flush=True)
    dsm.finalize()


def main():
    dsm = libdsm.init()
    {"after_finalize": after_finalize, "forked": forked}[sys.argv[1]](dsm, int(sys.argv[2]))


if __name__ == "__main__":
    main()
