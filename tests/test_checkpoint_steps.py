"""A checkpoint's steps on the real Store, with a rank dropped at every step
(a model of libdsm/checkpoint.py's order, not tests/sim's C protocol):
no generation is ever half visible, and a restore always finds a complete
one, the newest complete before the drop or the one it was making."""
import os
import zlib

import pytest

from libdsm.ckptstore import CheckpointError, Store, part_name

RANKS = 3


def steps(store, gen):
    """The checkpoint of gen as (rank, step) pairs in one order the ranks may
    take: parts and states (each may stop half written: a temporary file),
    the barrier, rank 0's manifest and clean-up, the closing barrier."""
    out = []
    for r in range(RANKS):
        data = bytes([gen, r]) * 2048
        out.append((r, lambda r=r, d=data: store.write(gen, part_name("part", r), [d])))
        out.append((r, lambda r=r: store.write(gen, part_name("state", r), [b"s%d" % r])))
    out.append((None, "barrier"))
    out.append((0, lambda: store.write_manifest(gen, manifest(gen))))
    out.append((0, lambda: store.drop_before(gen - 1)))
    out.append((None, "barrier"))
    return out


def manifest(gen):
    part = [{"name": part_name("part", r), "nbytes": 4096,
             "crc": zlib.crc32(bytes([gen, r]) * 2048)} for r in range(RANKS)]
    state = [{"name": part_name("state", r), "nbytes": 2, "crc": zlib.crc32(b"s%d" % r)}
             for r in range(RANKS)]
    return {"generation": gen, "parts": part, "states": state}


def run(store, gen, dropped=None, at=None):
    """Take gen's steps; rank `dropped` stops before its step number `at`
    (leaving a half-written temporary file), and then nobody passes a barrier."""
    mine, stopped = 0, False
    for rank, step in steps(store, gen):
        if step == "barrier":
            if stopped:
                return
            continue
        if rank == dropped:
            if mine == at:
                os.makedirs(store.gen_dir(gen), exist_ok=True)
                with open(store.path(gen, part_name("part", dropped) + ".tmp.1"), "wb") as f:
                    f.write(b"half")
                stopped = True
            mine += 1
            if stopped:
                continue
        step()


def restorable(store):
    """The newest generation whose files all check out, as a restore picks."""
    for gen in store.generations():
        doc = store.manifest(gen)
        try:
            for e in doc["parts"] + doc["states"]:
                store.read(gen, e["name"], e["nbytes"], e["crc"])
        except CheckpointError:
            continue
        return gen
    return None


@pytest.mark.parametrize("dropped", range(RANKS))
def test_a_rank_dropped_at_every_step_leaves_a_complete_generation(tmp_path, dropped):
    nsteps = sum(1 for r, _ in steps(Store(str(tmp_path)), 1) if r == dropped)
    for at in range(nsteps + 1):
        store = Store(str(tmp_path / ("at-%d" % at)))
        for gen in (1, 2):
            run(store, gen)
        run(store, 3, dropped, at)
        for gen in store.generations():         # every visible generation is whole
            doc = store.manifest(gen)
            for e in doc["parts"] + doc["states"]:
                store.read(gen, e["name"], e["nbytes"], e["crc"])
        # 3 is complete once rank 0 wrote its manifest; dropped between that
        # and removing generation 1, three are there until the next checkpoint
        made = at == nsteps or (dropped == 0 and at >= 3)
        assert restorable(store) == (3 if made else 2), (dropped, at)
        kept = 3 if dropped == 0 and at == 3 else 2
        expected = list(range(3, 3 - kept, -1)) if made else [2, 1]
        assert store.generations() == expected, (dropped, at, store.generations())
