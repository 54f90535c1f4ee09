"""named_regions: a producer and consumers that meet only through a name.

Rank 0 creates the region "results" and a System V segment for a ready
flag; it fills the region and raises the flag under a lock.  Every other
rank waits for the flag, maps "results" by name and checks every value.
Nobody passes an address or an Allocation: only the names are shared.

    ./dsmexec.py machine_file.example examples/named_regions.py [count]
"""
import sys
import time

import numpy as np

import libdsm
from libdsm import sysv

KEY = 0x44534D               # the System V key both sides agree on


def flag_segment():
    while True:
        try:
            return sysv.shmat(sysv.shmget(KEY, 8))
        except OSError:          # the producer has not created it yet
            time.sleep(0.01)


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with libdsm.init() as dsm:
        lock = dsm.lock(0)
        if dsm.rank == 0:
            sysv.shmget(KEY, 8, sysv.IPC_CREAT | sysv.IPC_EXCL)
            dsm.create_region("results", count * 8)
            region = dsm.map_region("results")
            region.array("float64")[:] = np.sqrt(np.arange(count))
            flag = flag_segment()
            with lock:
                flag.array("int64")[0] = count
            print("producer: wrote %d values to region 'results' at %#x"
                  % (count, region.address))
        else:
            flag = flag_segment()
            while True:
                with lock:
                    if flag.array("int64")[0]:
                        break
                time.sleep(0.001)
            region = dsm.map_region("results")
            ok = np.array_equal(region.array("float64"), np.sqrt(np.arange(count)))
            print("consumer %d: region 'results' at %#x holds %d values: %s"
                  % (dsm.rank, region.address, count, "ok" if ok else "WRONG"))
        dsm.unmap_region(region)
        sysv.shmdt(flag)
        dsm.barrier()
        if dsm.rank == 0:
            dsm.destroy_region("results")
            sysv.shmctl(sysv.shmget(KEY, 0), sysv.IPC_RMID)


if __name__ == "__main__":
    main()
