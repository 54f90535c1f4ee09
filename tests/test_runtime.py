"""The runtime under real ranks (local, through dsmexec): coherence,
concurrency, scale, and failures."""
import os
import re

import pytest

from dsmrun import DSM_PROG, ROOT, rank_lines, run, run_code

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("n", [2, 4])
def test_double_touch(tmp_path, n):
    p = run(tmp_path, n, os.path.join(ROOT, "examples", "double_touch.py"))
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "integer value")
    assert sorted(got) == list(range(n))
    for r, text in got.items():
        assert text == "rank %d of %d: integer value: %d" % (r, n, n * (n + 1) // 2)


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("scenario,args,expect", [
    ("own_pages", [], "own_pages bad=0"),
    ("alternation", ["--rounds", "150"], None),
    ("false_sharing", ["--rounds", "40"], "false_sharing bad=0"),
    ("mutual", ["--rounds", "60"], "bad=0"),
])
def test_coherence(tmp_path, n, scenario, args, expect):
    p = run(tmp_path, n, DSM_PROG, scenario, *args)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, scenario)
    assert sorted(got) == list(range(n)), p.stdout
    for text in got.values():
        if expect:
            assert expect in text
        else:   # strict alternation: the exact total, and page 0 is where it thrashes
            total, expected, hottest = re.search(r"total=(\d+) expected=(\d+) hottest=(\w+)",
                                                 text).groups()
            assert total == expected == str(150 * n)
            assert hottest == "0"


def test_messages_per_fault_do_not_grow_with_ranks(tmp_path):
    per_fault = {}
    for n in (2, 4):
        p = run(tmp_path, n, DSM_PROG, "messages", "--rounds", "100",
                env={"DSM_READAHEAD": "1"})         # one fault, one page
        assert p.returncode == 0, p.stderr
        faults, sent, opened = map(int, re.search(
            r"faults=(\d+) sent=(\d+) opened_by_waiter=(\d+)", p.stdout).groups())
        assert faults == 200            # a read then a write fault per page
        assert opened == 100            # each upgrade opened by its faulting thread, not the
        per_fault[n] = sent / faults    # comm thread (which would interrupt it to flush)
    assert per_fault[2] == per_fault[4] <= 2


def test_fault_served_while_owner_busy_in_python(tmp_path):
    # the owner stays busy in pure Python until the fault returned: were the
    # fault to wait for the owner's Python, the job would never end
    p = run(tmp_path, 2, DSM_PROG, "busy_owner", "--until-file", str(tmp_path / "served"))
    assert p.returncode == 0, p.stderr
    m = re.search(r"value=(\d+) fault_s=([\d.]+)", p.stdout)
    assert m and m.group(1) == "4242"
    assert "busy done" in p.stdout


def test_one_gib_region_at_four_ranks(tmp_path):
    p = run(tmp_path, 4, DSM_PROG, "big", env={"DSM_SIZE": "1G"})
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "big nbytes")
    assert len(got) == 4
    for text in got.values():
        assert "nbytes=1073741824" in text and "bad=0" in text


def test_mapping_limit_is_a_clear_error(tmp_path):
    # one page per round-robin block would alternate 262144 protections
    p = run(tmp_path, 2, DSM_PROG, "own_pages", env={"DSM_SIZE": "1G", "DSM_BLOCK_PAGES": "1"})
    assert p.returncode == 1
    assert "MappingLimitError" in p.stderr and "DSM_BLOCK_PAGES" in p.stderr


def test_faulthandler_displacing_the_handler_is_repaired(tmp_path):
    p = run(tmp_path, 2, DSM_PROG, "faulthandler_displaced")
    assert p.returncode == 0, p.stderr
    assert len(rank_lines(p.stdout, "displaced ok=1")) == 2


@pytest.mark.parametrize("n", [2, 4])
def test_rank_that_raises(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "raises", "--fail-rank", "1")
    assert p.returncode == 1
    assert "RuntimeError: rank 1 fails on purpose" in p.stderr
    assert re.search(r"dsmexec: rank 1 .*exited with status 1", p.stderr), p.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_rank_that_segfaults(tmp_path, n):
    p = run(tmp_path, n, DSM_PROG, "segv", "--fail-rank", "1")
    assert p.returncode == 128 + 11, p.stderr
    assert "Fatal Python error: Segmentation fault" in p.stderr
    assert "in segv" in p.stderr            # faulthandler's traceback names the function
    assert re.search(r"dsmexec: rank 1 .*signal 11", p.stderr), p.stderr


def test_exit_without_finalize_is_an_error(tmp_path):
    p = run(tmp_path, 2, DSM_PROG, "no_finalize", "--fail-rank", "1")
    assert p.returncode != 0
    assert "finalize" in p.stderr


def test_single_rank_without_dsmexec():
    code = ("import libdsm, struct\n"
            "with libdsm.init(size=1 << 20) as d:\n"
            "    struct.pack_into('<q', d.mem, 4096, 77)\n"
            "    d.barrier()\n"
            "    print(d.rank, d.size, struct.unpack_from('<q', d.mem, 4096)[0],\n"
            "          d.page_of(4096), d.page_access(1))\n")
    p = run_code(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "1", "77", "1", "rw"]


def test_address_in_use_is_a_clear_error():
    code = ("import mmap, ctypes, libdsm\n"
            "m = mmap.mmap(-1, 1 << 20)\n"
            "addr = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
            "try:\n"
            "    libdsm.init(size=1 << 20, base=addr)\n"
            "except libdsm.AddressInUseError as e:\n"
            "    print('refused:', e)\n")
    p = run_code(code)
    assert p.returncode == 0, p.stderr
    assert "refused:" in p.stdout and "already in use" in p.stdout


def test_read_ahead_and_prefetch(tmp_path):
    # home blocks of 64 pages: a request, and so a run, stops at a block's end
    p = run(tmp_path, 2, DSM_PROG, "streaming", env={"DSM_BLOCK_PAGES": "64"})
    assert p.returncode == 0, p.stderr
    m = re.search(r"streaming pages=(\d+) ok=1 seq_faults=(\d+) prefetched=(\d+) "
                  r"after_prefetch_faults=0 after_write_prefetch_faults=0 early=(\d+) "
                  r"msgs=(\d+)", p.stdout)
    assert m, p.stdout
    pages, faults, prefetched, early, msgs = map(int, m.groups())
    assert faults < pages / 8                   # read-ahead grew to many pages a fault
    assert faults + prefetched >= pages
    assert early > 0                            # trigger pages asked for runs ahead of time
    assert msgs < pages / 8                     # the pages came in runs, not one by one


@pytest.mark.parametrize("wait", ["reply", "yield"])
def test_both_ways_of_waiting(tmp_path, wait):
    """A waiting thread that receives its own replies (leader/follower over
    the comm thread's sockets), and one that yields to the comm thread:
    faults both ways, locks and collectives at 3 ranks, and a busy owner
    still served."""
    env = {"DSM_WAIT": wait}
    for scenario, args, expect in [("mutual", ["--rounds", "60"], "bad=0"),
                                   ("lock_invariant", [], "broken=0"),
                                   ("collectives", [], "collectives bad=0")]:
        p = run(tmp_path, 3, DSM_PROG, scenario, *args, env=env)
        assert p.returncode == 0, p.stderr
        got = rank_lines(p.stdout, scenario + " ")
        assert sorted(got) == [0, 1, 2], p.stdout
        assert all(expect in text for text in got.values()), p.stdout
    served = tmp_path / ("served-" + wait)
    p = run(tmp_path, 2, DSM_PROG, "busy_owner", "--until-file", str(served), env=env)
    assert p.returncode == 0, p.stderr      # the fault was served during the busy spell
    m = re.search(r"value=(\d+) fault_s=([\d.]+)", p.stdout)
    assert m and m.group(1) == "4242" and "busy done" in p.stdout
