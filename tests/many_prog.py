"""The program of tests/test_many_ranks.py: many ranks, run under dsmexec.

    many_prog.py work     barriers, a bcast, an allreduce and a lock-guarded
                          counter, each checked; prints each rank's
                          connections (the core's count, and the sockets in
                          /proc/self/fd less the one to dsmexec), what it
                          passed on as a host leader, and its invalidations
"""
import os
import sys

import numpy as np

import libdsm


def sockets():
    """The sockets this process holds open."""
    fds = os.listdir("/proc/self/fd")
    out = 0
    for fd in fds:
        try:
            out += os.readlink("/proc/self/fd/%s" % fd).startswith("socket:")
        except OSError:
            pass                # the directory's own descriptor, gone by now
    return out


def work(dsm):
    n, r, bad = dsm.size, dsm.rank, []
    counter = dsm.array((1,), "int64")
    dsm.barrier()
    got = dsm.bcast(np.arange(4) * (n - 1) if r == n - 1 else None, root=n - 1)
    if not np.array_equal(got, np.arange(4) * (n - 1)):
        bad.append("bcast %r" % (got,))
    total = dsm.allreduce(np.array([r, 1]), op="sum")
    if list(total) != [n * (n - 1) // 2, n]:
        bad.append("allreduce %r" % (total,))
    lock = dsm.lock("counter")
    for _ in range(2):
        with lock:
            counter[0] += 1
    dsm.barrier()
    if counter[0] != 2 * n:
        bad.append("counter %d, want %d" % (counter[0], 2 * n))
    dsm.barrier()
    s = dsm.stats()
    print("connections %d sockets %d forwarded %d" % (s["connections"], sockets() - 1,
                                                      s["forwarded"]))
    print("invalidations %d" % s["invalidations"])
    print("bad %s" % bad if bad else "ok")
    sys.stdout.flush()


if __name__ == "__main__":
    with libdsm.init() as dsm:
        {"work": work}[sys.argv[1]](dsm)
