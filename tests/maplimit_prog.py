"""A rank program that takes every mapping the process may have after
init, then touches a page another rank is home of (tests/test_mapping_limit.py).

Rank 1 splits one anonymous reservation of its own into single pages of
alternating protection until mprotect says ENOMEM: the process is at
vm.max_map_count.  Installing the page it then faults on needs a mapping
more: the fault must end with the MappingLimitError text (what to change),
not with "mprotect: Cannot allocate memory".
"""
import ctypes
import mmap

import libdsm

PROT_NONE, PROT_READ = 0, 1


def exhaust_mappings():
    """Split a reservation until the kernel refuses: how many splits it took."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    with open("/proc/sys/vm/max_map_count") as f:
        pages = 2 * int(f.read()) + 4
    page = mmap.PAGESIZE
    base = libc.mmap(None, pages * page, PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert base not in (None, ctypes.c_void_p(-1).value), "mmap failed"
    for i in range(0, pages, 2):
        if libc.mprotect(base + i * page, page, PROT_NONE):
            return i // 2
    raise AssertionError("vm.max_map_count was never reached")


def main():
    dsm = libdsm.init()
    target = next(pg for pg in range(dsm.nbytes // dsm.page_size) if dsm.page_home(pg) == 0)
    offset = target * dsm.page_size
    dsm.barrier()
    if dsm.rank == 1:
        splits = exhaust_mappings()
        print("splits=%d" % splits, flush=True)
        dsm.mem[offset] = 1             # the fault that needs one mapping more
        print("the fault was served", flush=True)
    dsm.barrier()
    dsm.finalize()


if __name__ == "__main__":
    main()
