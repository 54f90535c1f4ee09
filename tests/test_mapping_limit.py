"""The mapping budget: a program that takes mappings of its own after init
must not meet an mprotect ENOMEM inside a page fault, but the same clear
error as at init (MappingLimitError's text: what to change)."""
import os
import re

import pytest

from dsmrun import ROOT, run

pytestmark = pytest.mark.timeout(120)
PROG = os.path.join(ROOT, "tests", "maplimit_prog.py")


def test_a_fault_past_the_process_mapping_limit_fails_with_the_limit_error(tmp_path):
    p = run(tmp_path, 2, PROG, env={"DSM_SIZE": "64M"})
    assert "splits=" in p.stdout, p.stderr
    assert "the fault was served" not in p.stdout
    assert p.returncode == 1, p.stderr
    assert re.search(r"^\[rank 1\] libdsm: rank 1: fatal: page \d+ needed, but page \d+: the "
                     r"region would need \d+ mappings, over the \d+ that vm\.max_map_count "
                     r"allows; use a larger DSM_BLOCK_PAGES or raise vm\.max_map_count$",
                     p.stderr, re.M), p.stderr
    assert "Cannot allocate memory" not in p.stderr
    assert re.search(r"^dsmexec: rank 1 \(host localhost, line 2\) exited with status 1",
                     p.stderr, re.M), p.stderr
