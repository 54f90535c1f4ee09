"""The README's programs, examples/row_fill.py and examples/histogram.py, at 2 and 4 ranks."""
import os
import re

import pytest

from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(150)


def example(tmp_path, n, name, *args):
    p = run(tmp_path, n, os.path.join(ROOT, "examples", name), *args)
    assert p.returncode == 0, p.stderr
    assert "WRONG" not in p.stdout
    return p.stdout


@pytest.mark.parametrize("n", [2, 4])
def test_row_fill_sums_every_row_without_write_faults(tmp_path, n):
    out = example(tmp_path, n, "row_fill.py", "256", "512")
    filled = rank_lines(out, " filled rows ")
    assert sorted(filled) == list(range(n)), out
    assert all(text.endswith("with 0 write faults") for text in filled.values()), out
    rows = [text.split()[4] for _, text in sorted(filled.items())]
    assert rows[0].startswith("0-") and rows[-1].endswith("-255"), rows
    assert rank_lines(out, "sum of 256x512")[0] == (
        "sum of 256x512 on %d ranks: 16842752, expected 16842752: ok" % n)


@pytest.mark.parametrize("n", [2, 4])
def test_histogram_counts_every_ranks_samples(tmp_path, n):
    out = example(tmp_path, n, "histogram.py", "5000")
    assert rank_lines(out, "counted alone")[0].endswith(
        "of %d on %d ranks, counted alone: ok" % (5000 * n, n)), out
    bars = [line for line in out.splitlines() if line.startswith("[rank 0]  ")]
    assert len(bars) == 16, out
    assert all(line.startswith("[rank 0] ") for line in out.splitlines()), out


def test_readme_first_program_prints_what_the_readme_says(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    program = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (claim,) = re.findall(r"dsmexec -n 4 prog\.py +# .*?: (\[rank 0\] .*)", readme)
    (tmp_path / "prog.py").write_text(program)
    p = run(tmp_path, 4, str(tmp_path / "prog.py"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [claim], p.stdout
