"""Every example, checked against its own sequential computation."""
import os

import pytest

from dsmrun import ROOT, run

pytestmark = pytest.mark.timeout(150)

EXAMPLES = {
    "share.py": [],
    "counter_lock.py": ["300"],
    "matmul.py": ["128"],
    "sor.py": ["96", "30"],
    "pi_ep.py": ["200000"],
}


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example(tmp_path, n, name):
    p = run(tmp_path, n, os.path.join(ROOT, "examples", name), *EXAMPLES[name])
    assert p.returncode == 0, p.stderr
    assert "WRONG" not in p.stdout
    checked = [line for line in p.stdout.splitlines() if line.endswith("ok")]
    expected = 1 if name in ("matmul.py", "sor.py", "pi_ep.py") else n
    assert len(checked) == expected, p.stdout
