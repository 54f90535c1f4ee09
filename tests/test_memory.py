"""The region's Memory and how Allocations get bound to it (malloc binds,
bcast's pickling binds on the receiving side), on ordinary memory."""
import pickle

import numpy as np
import pytest

from libdsm import collectives
from libdsm.alloc import Allocation
from libdsm.memory import Memory

pytestmark = pytest.mark.timeout(30)
BASE = 0x7000_0000
PAGE = 4096


@pytest.fixture
def memory():
    return Memory(BASE, memoryview(bytearray(16 * PAGE)), PAGE)


def test_view_and_address(memory):
    memory.view(100, 3)[:] = b"abc"
    assert bytes(memory.mem[100:103]) == b"abc"
    assert memory.address(100) == BASE + 100
    with pytest.raises(ValueError, match=r"\(65532, 8\) is not inside the region"):
        memory.view(16 * PAGE - 4, 8)


def test_pages_under_a_span(memory):
    assert memory.pages(0, 1) == (0, 1)
    assert memory.pages(PAGE - 1, 2) == (0, 2)
    assert memory.pages(3 * PAGE, 2 * PAGE) == (3, 2)
    assert memory.pages(5 * PAGE, 0) == (5, 0)
    assert memory.page_of(2 * PAGE + 5) == 2
    with pytest.raises(ValueError, match="outside the region"):
        memory.page_of(16 * PAGE)


def test_array_span_covers_every_stride():
    buf = memoryview(bytearray(16 * PAGE))
    arr = np.frombuffer(buf, dtype="int32").reshape(16, 1024)
    memory = Memory(arr.__array_interface__["data"][0], buf, PAGE)      # the real address
    assert memory.array_span(arr) == (0, 16 * PAGE)
    assert memory.array_span(arr[2:4, ::-1]) == (2 * PAGE, 2 * PAGE)
    assert memory.array_span(arr[5, 10:12]) == (5 * PAGE + 40, 8)
    offset, nbytes = memory.array_span(arr[3:3])          # empty: nothing to fetch
    assert nbytes == 0 and memory.pages(offset, nbytes)[1] == 0


def test_bcast_pickling_binds_allocations_anywhere_in_the_value(memory):
    sender = [(Allocation(PAGE, 8), 64), {"x": Allocation(2 * PAGE, 3)}]
    got = collectives.loads(collectives.dumps(sender), memory)
    assert got == sender
    got[0][0].mem[:] = b"received"
    assert bytes(memory.mem[PAGE:PAGE + 8]) == b"received"
    assert got[1]["x"].address == BASE + 2 * PAGE


def test_bcast_pickling_leaves_other_values_alone(memory):
    value = {"n": 3, "arr": np.arange(5), "text": "x" * 1000}
    got = collectives.loads(collectives.dumps(value), memory)
    assert got["n"] == 3 and list(got["arr"]) == list(range(5)) and got["text"] == value["text"]


def test_plain_pickle_cannot_smuggle_a_memory(memory):
    bound = Allocation(0, 4, memory)
    assert b"memoryview" not in pickle.dumps(bound)
    assert pickle.loads(pickle.dumps(bound)) == bound


def test_span_of_an_allocation_a_tuple_and_nothing_else(memory):
    assert memory.span(Allocation(4096, 100)) == (4096, 100)
    assert memory.span((8, 16)) == (8, 16)
    with pytest.raises(TypeError, match="expected an Allocation, .* got str"):
        memory.span("x")
