"""The program of the collective tests in tests/test_collectives.py: run
under dsmexec, it does what the test asks and prints lines the test checks.

    coll_prog.py built     scatter, alltoall, scan, exscan, reduce_scatter and
                           the allreduce of lists, bools, complex, logical and
                           bitwise ops, out=, against numpy
    coll_prog.py errors    mismatched calls: what each rank's error says
    coll_prog.py finalize  rank 0 makes an array while the others finalize
"""
import numpy as np

import libdsm
from sync_prog import expect, main


def value(r, dtype):
    """What rank r passes: the same for every rank to compute."""
    rng = np.random.default_rng(77 + r)
    if dtype == "bool":
        return rng.integers(0, 2, size=5).astype(bool)
    if dtype == "float64":
        return rng.integers(-1, 2, size=5) * 0.5
    if dtype == "complex128":
        return rng.integers(-5, 5, size=5) + 1j * rng.integers(-5, 5, size=5)
    return rng.integers(1, 60, size=5).astype(dtype)


def built(dsm):
    n, r, bad = dsm.size, dsm.rank, []
    ufuncs = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum,
              "land": np.logical_and, "lor": np.logical_or, "lxor": np.logical_xor,
              "band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor}
    for dtype, ops in (("bool", ("land", "lor", "lxor", "band", "bor", "bxor", "sum", "max")),
                       ("int64", tuple(ufuncs)), ("uint8", ("band", "bor", "bxor", "lor")),
                       ("float64", ("land", "lor", "lxor", "sum")),
                       ("complex128", ("sum", "prod"))):
        stack = np.stack([value(q, dtype) for q in range(n)])
        for op in ops:
            want = ufuncs[op].reduce(stack, axis=0)
            got = dsm.allreduce(value(r, dtype), op=op)
            if got.dtype != want.dtype or not np.array_equal(got, want):
                bad.append("allreduce %s %s: %r, want %r" % (dtype, op, got, want))
            got = dsm.scan(value(r, dtype), op=op)
            if not np.array_equal(got, ufuncs[op].reduce(stack[:r + 1], axis=0)):
                bad.append("scan %s %s" % (dtype, op))
            got = dsm.exscan(value(r, dtype), op=op)
            if (got is None) != (r == 0) or (
                    r and not np.array_equal(got, ufuncs[op].reduce(stack[:r], axis=0))):
                bad.append("exscan %s %s" % (dtype, op))
    checks = {
        "list": (dsm.allreduce([r, 1, 2]), [n * (n - 1) // 2, n, 2 * n]),
        "tuple": (dsm.allreduce((1.5, r)), (1.5 * n, n * (n - 1) // 2)),
        "bool": (dsm.allreduce(r == 0, op="lor"), True),
        "bool and": (dsm.allreduce(r == 0, op="land"), n == 1),
        "complex": (dsm.allreduce(complex(r, 1)), complex(n * (n - 1) // 2, n)),
        "bxor int": (dsm.allreduce(1 << r, op="bxor"), (1 << n) - 1),
        "scatter": (dsm.scatter([q * 10 for q in range(n)] if r == 1 else None, root=1), r * 10),
        "alltoall": (dsm.alltoall(["%d>%d" % (r, q) for q in range(n)]),
                     ["%d>%d" % (q, r) for q in range(n)]),
        "scan int": (dsm.scan(r + 1), (r + 1) * (r + 2) // 2),
    }
    for what, (got, want) in checks.items():
        if got != want or type(got) is not type(want):
            bad.append("%s: %r, want %r" % (what, got, want))
    out = np.zeros(4)
    if dsm.allreduce(np.full(4, r + 1.0), op="max", out=out) is not out or \
            not np.array_equal(out, np.full(4, float(n))):
        bad.append("allreduce out= %r" % out)
    rows = np.arange(3 * n + 1, dtype="int64")
    block = dsm.reduce_scatter(rows * (r + 1))
    want = np.array_split(rows * (n * (n + 1) // 2), n)[r]
    if not np.array_equal(block, want):
        bad.append("reduce_scatter %r, want %r" % (block, want))
    counts = [2] * n
    block = dsm.reduce_scatter(np.ones(2 * n), counts=counts, out=np.empty(2))
    if not np.array_equal(block, np.full(2, float(n))):
        bad.append("reduce_scatter counts %r" % block)
    print("built bad=%s" % (bad or 0))


def errors(dsm):
    r = dsm.rank
    print("int float: " + expect(libdsm.CollectiveError, lambda: dsm.allreduce(
        1 if r == 0 else 1.5)))
    print("shape: " + expect(libdsm.CollectiveError, lambda: dsm.allreduce(np.zeros(3 + r))))
    print("op: " + expect(libdsm.CollectiveError, lambda: dsm.allreduce(
        1.0, op="max" if r == 0 else "sum")))
    print("kind: " + expect(libdsm.CollectiveError, lambda: dsm.barrier()
                            if r == 0 else dsm.allgather(1)))
    print("root: " + expect(libdsm.CollectiveError, lambda: dsm.bcast(1, root=min(r, 1))))
    print("scatter: " + expect(ValueError, lambda: dsm.scatter([1] if r == 0 else None)))
    print("alltoall: " + expect(ValueError, lambda: dsm.alltoall([1] * (dsm.size + (r == 1)))))
    print("band float: " + expect(TypeError, lambda: dsm.allreduce(1.5, op="band")))
    print("after errors sum=%d" % dsm.allreduce(1))


def finalize(dsm):
    if dsm.rank == 0:
        print("array: " + expect(libdsm.CollectiveError, lambda: dsm.array(10)))


if __name__ == "__main__":
    main(globals())
