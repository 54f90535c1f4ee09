"""allreduce, reduce, gather and allgather on real ranks, against numpy,
and the collectives built on them (scatter, alltoall, scan, exscan,
reduce_scatter; lists, bools, complex, logical and bitwise ops, out=);
mismatched calls fail on every rank instead of hanging, saying what
differs."""
import numpy as np
import pytest

from dsmrun import COLL_PROG, DSM_PROG, line_of, rank_lines, run

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_collectives_match_numpy_and_mismatches_fail_everywhere(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "collectives")
    assert p.returncode == 0, p.stderr
    assert sorted(rank_lines(p.stdout, "collectives bad=0")) == list(range(n)), p.stdout
    for what, text in (("err shape", "ranks passed different shapes to allreduce: (3,) on "
                                     "rank 0, (4,) on rank"),
                       ("err op", "ranks passed different ops to allreduce: op='max' on rank 0, "
                                  "op='sum' on rank"),
                       ("err kind", "ranks called different collectives: rank 0 called "
                                    "barrier() at dsm_prog.py:"),
                       ("err dtype", "reduce takes numbers, bools, complex numbers")):
        got = rank_lines(p.stdout, what)
        assert sorted(got) == list(range(n)), p.stdout
        assert all(text in line for line in got.values()), got
    assert sorted(rank_lines(p.stdout, "after errors sum=%d" % n)) == list(range(n))


def test_what_the_comm_threads_combine():
    """Bools, complex sums and every op on the core's types go to the C core;
    numpy combines the rest after an exchange."""
    from libdsm.reductions import in_core
    for arr, op in ((np.array([True, False]), "land"), (np.array(True), "sum"),
                    (np.array([1j, 2]), "sum"), (np.array(1 + 1j, "complex64"), "sum"),
                    (np.arange(3), "bxor"), (np.arange(3.0), "lor")):
        send, finish = in_core(arr, op)
        assert send.dtype.name in ("uint8", "int64", "float64", "float32"), (arr, op)
        back = finish(send)
        assert back.shape == arr.shape, (arr, op)
        assert back.dtype == (bool if op in ("land", "lor") else np.add.reduce(
            np.stack([arr])).dtype), (arr, op)
    for arr, op in ((np.array([1j]), "prod"), (np.arange(3.0), "band"),
                    (np.zeros(2, "float16"), "sum")):
        assert in_core(arr, op) is None, (arr, op)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_built_collectives_match_numpy(tmp_path, n):
    p = run(tmp_path, n, COLL_PROG, "built")
    assert p.returncode == 0, p.stdout + p.stderr
    assert rank_lines(p.stdout, "built bad=") == {r: "built bad=0" for r in range(n)}, p.stdout


def test_collective_errors_name_what_differs(tmp_path):
    p = run(tmp_path, 3, COLL_PROG, "errors")
    assert p.returncode == 0, p.stdout + p.stderr
    want = {
        "int float": "CollectiveError: rank {r} on host localhost: ranks passed different "
                     "dtypes to allreduce: int64 on rank 0, float64 on ranks 1, 2",
        "shape": "ranks passed different shapes to allreduce: (3,) on rank 0, (4,) on rank 1, "
                 "(5,) on rank 2",
        "op": "ranks passed different ops to allreduce: op='max' on rank 0, op='sum' on ranks "
              "1, 2",
        "kind": "ranks called different collectives: rank 0 called barrier() at coll_prog.py:%d; "
                "ranks 1, 2 called allgather() at coll_prog.py:%d" % (
                    line_of(COLL_PROG, "dsm.barrier()"),
                    line_of(COLL_PROG, "dsm.allgather(1)")),
        "root": "ranks passed different roots to bcast: root=0 on rank 0, root=1 on ranks 1, 2",
        "scatter": "ValueError: scatter needs a list of 3 values at root 0, got list of 1",
        "alltoall": "ValueError: alltoall needs a list of 3 values from every rank; rank 1 "
                    "passed list of 4",
        "band float": "TypeError: op 'band' does not apply to float64",
    }
    for what, text in want.items():
        got = rank_lines(p.stdout, what + ": ")
        assert sorted(got) == [0, 1, 2], p.stdout
        for r, line in got.items():
            assert text.format(r=r) in line, line
    assert rank_lines(p.stdout, "after errors") == {r: "after errors sum=3" for r in range(3)}


def test_collective_while_another_rank_finalizes_says_so(tmp_path):
    p = run(tmp_path, 2, COLL_PROG, "finalize")
    assert rank_lines(p.stdout, "array: ") == {
        0: "array: CollectiveError: rank 0 on host localhost: rank 0 called array() at "
           "coll_prog.py:%d while rank 1 was finalizing"
           % line_of(COLL_PROG, "dsm.array(10)")}, \
        p.stdout + p.stderr
