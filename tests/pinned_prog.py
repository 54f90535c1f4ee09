"""The runtime program for the pinned-page tests: run under dsmexec, it
does what the test asks and prints lines the test checks.

    pinned_prog.py SCENARIO [--mib N] [--dir D]
"""
import argparse
import hashlib
import os
import struct
import time

import numpy as np

import libdsm

Q = struct.Struct("<q")


def pattern(n, gen, cache={}):
    """Random bytes every rank can compute without touching the region."""
    if (n, gen) not in cache:
        cache.clear()
        cache[n, gen] = np.frombuffer(np.random.default_rng(gen).bytes(n), np.uint8)
    return cache[n, gen]


def give_to_others(dsm, arr, gen):
    """Every rank but 0 writes its share of arr: rank 0 then holds none of it."""
    dsm.barrier()                   # rank 0 is done with what came before
    others = dsm.size - 1
    share = -(-len(arr) // others // dsm.page_size) * dsm.page_size
    if dsm.rank:
        lo = (dsm.rank - 1) * share
        arr[lo:lo + share] = pattern(len(arr), gen)[lo:lo + share]
    dsm.barrier()
    if dsm.rank == 0:
        first = dsm.page_of(arr.__array_interface__["data"][0] - dsm.base)
        pages = range(first, first + len(arr) // dsm.page_size)
        held = [(p, dsm.page_access(p)) for p in pages if dsm.page_access(p) != "none"]
        assert not held, (gen, len(held), held[:5], held[-5:])


def io(dsm, a):
    """64 MiB through save, write and readinto while other ranks hold the pages."""
    n = a.mib << 20
    arr = dsm.array(n, "uint8")
    path = os.path.join(a.dir, "data")
    results = []
    give_to_others(dsm, arr, 1)
    if dsm.rank == 0:
        dsm.save(path, arr)                           # np.save format, to path + ".npy"
        got = np.load(path + ".npy")
        results.append(("save", np.array_equal(got, pattern(n, 1)) and
                        got.tobytes() == bytes(arr)))
    give_to_others(dsm, arr, 2)
    if dsm.rank == 0:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            dsm.write(fd, arr)
        finally:
            os.close(fd)
        with open(path, "rb") as f:
            data = f.read()
        results.append(("write_fd", data == pattern(n, 2).tobytes() and data == bytes(arr)))
    give_to_others(dsm, arr, 3)
    if dsm.rank == 0:
        with open(path, "wb") as f:
            f.write(b"head")
            dsm.write(f, memoryview(arr))
            f.write(b"tail")
        with open(path, "rb") as f:
            data = f.read()
        results.append(("write_file", data == b"head" + pattern(n, 3).tobytes() + b"tail"
                        and data[4:-4] == bytes(arr)))
        with open(path, "wb") as f:
            f.write(pattern(n, 4).tobytes())
    give_to_others(dsm, arr, 5)
    if dsm.rank == 0:
        fd = os.open(path, os.O_RDONLY)
        try:
            dsm.readinto(fd, arr)
        finally:
            os.close(fd)
        results.append(("readinto_fd", bytes(arr) == pattern(n, 4).tobytes()))
    dsm.barrier()
    digest = hashlib.sha1(bytes(arr)).hexdigest()     # every rank sees what rank 0 read
    digests = [dsm.bcast(digest, root=r) for r in range(dsm.size)]
    give_to_others(dsm, arr, 6)
    if dsm.rank == 0:
        with open(path, "rb") as f:
            dsm.readinto(f, memoryview(arr))
        results.append(("readinto_file", bytes(arr) == pattern(n, 4).tobytes()))
        results.append(("coherent", len(set(digests)) == 1))
        try:
            with open(path, "rb") as f:
                dsm.readinto(f, dsm.array(n + 4096, "uint8", name="longer"))
            results.append(("eof", False))
        except EOFError as e:
            results.append(("eof", "expected %d bytes, got %d" % (n + 4096, n) in str(e)))
        print("io " + " ".join("%s=%d" % (k, v) for k, v in results))
        print("io files=%s" % sorted(os.listdir(a.dir)))
    dsm.barrier()


def holds(dsm, a):
    """A page pinned by rank 0 is not given to rank 1's writer until unpinned."""
    page = next(p for p in range(dsm.nbytes // dsm.page_size) if dsm.page_home(p) == 1)
    off = page * dsm.page_size
    if dsm.rank == 1:
        Q.pack_into(dsm.mem, off, 1)
    dsm.barrier()
    if dsm.rank == 0:
        with dsm.pinned((off, 8)):
            held = dsm.stats()["deferred"]
            dsm.barrier()                   # rank 1 now writes, and must wait
            while dsm.stats()["deferred"] == held:      # until its request is held here
                time.sleep(0.001)
            during = Q.unpack_from(dsm.mem, off)[0]
        dsm.barrier()
        print("holds during=%d after=%d" % (during, Q.unpack_from(dsm.mem, off)[0]))
    else:
        dsm.barrier()
        Q.pack_into(dsm.mem, off, 2)
        dsm.barrier()


def mutual(dsm, a):
    """Every rank pins the same pages, homed on every rank, for writing, and
    increments each inside: no deadlock, and no increment lost."""
    npages = 8 * dsm.size
    arr = dsm.array(npages * dsm.page_size // 8, "int64")
    words = arr[::dsm.page_size // 8]
    for _ in range(a.rounds):
        with dsm.pinned(arr, write=True):
            words += 1
    dsm.barrier()
    print("mutual counts=%s" % sorted(set(words.tolist())))


def timeout(dsm, a):
    """Nested pins across two ranks: rank 0 times out, and then rank 1 gets it."""
    pages = [next(p for p in range(dsm.nbytes // dsm.page_size) if dsm.page_home(p) == r)
             for r in (0, 1)]
    mine, theirs = [(p * dsm.page_size, 8) for p in (pages[dsm.rank], pages[1 - dsm.rank])]
    with dsm.pinned(mine, write=True):
        dsm.barrier()
        try:
            with dsm.pinned(theirs, write=True, timeout=1 if dsm.rank == 0 else 30):
                print("timeout rank %d got it" % dsm.rank)
        except libdsm.PinTimeoutError as e:
            print("timeout rank %d: %s" % (dsm.rank, e))
    dsm.barrier()


SCENARIOS = {f.__name__: f for f in (io, holds, mutual, timeout)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--dir", default=".")
    a = p.parse_args()
    with libdsm.init() as dsm:
        SCENARIOS[a.scenario](dsm, a)


if __name__ == "__main__":
    main()
