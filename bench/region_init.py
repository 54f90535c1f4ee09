"""A 4 GiB region over 4 ranks with the default vm.max_map_count: how long
libdsm.init() takes, and that pages all over it work.

    ./dsmexec.py bench/machines-4 bench/region_init.py
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import libdsm                      # noqa: E402
import reference                   # noqa: E402


def main():
    t = time.perf_counter()
    dsm = libdsm.init(size=4 << 30)
    took = time.perf_counter() - t
    npages = dsm.nbytes // dsm.page_size
    stride = npages // 256
    for p in range(dsm.rank, npages, stride):           # writes all over the region
        struct.pack_into("<q", dsm.mem, p * dsm.page_size, p)
    dsm.barrier()
    bad = sum(struct.unpack_from("<q", dsm.mem, p * dsm.page_size)[0] != p
              for r in range(dsm.size) for p in range(r, npages, stride))
    slowest = max(dsm.bcast(took, root=r) for r in range(dsm.size))
    if dsm.rank == 0:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        print("4 GiB over %d ranks: init %.2f s (slowest rank), %d pages checked, %d wrong, "
              "%d mappings of %d allowed" % (dsm.size, slowest, 256 * dsm.size, bad,
                                             dsm.stats()["vma_runs"], limit))
        reference.emit(row="4 GiB region, %d ranks: init" % dsm.size, seconds=slowest,
                       ok=bad == 0)
    dsm.finalize()


if __name__ == "__main__":
    main()
