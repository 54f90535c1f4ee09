"""counter_lock: N ranks each add 1 to one shared counter K times, under a
lock.  The total must be exactly N * K.

    ./dsmexec.py machine_file.example examples/counter_lock.py [K]
"""
import sys

import libdsm


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with libdsm.init() as dsm:
        counter = dsm.array(1, "int64")
        lock = dsm.lock(0)
        for _ in range(k):
            with lock:
                counter[0] += 1
        dsm.barrier()
        total = int(counter[0])
        print("rank %d: counter %d, expected %d: %s"
              % (dsm.rank, total, dsm.size * k, "ok" if total == dsm.size * k else "WRONG"))


if __name__ == "__main__":
    main()
