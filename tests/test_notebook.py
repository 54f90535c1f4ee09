"""The %%dsmexec cell magic, run by IPython's own test shell on real local ranks."""
import os
import sys

import pytest
from IPython.testing.globalipapp import get_ipython

from libdsm_services import notebook

pytestmark = pytest.mark.timeout(150)

HELLO = """\
import libdsm
with libdsm.init() as dsm:
    print("hello from rank", dsm.rank, "of", dsm.size)
"""

FAILS = """\
import libdsm
with libdsm.init() as dsm:
    if dsm.rank == 1:
        raise ValueError("cell failed on purpose")
    dsm.barrier()
"""

# Rank 0 prints, then waits until the test has seen that line in the cell:
# it can finish only if its output reaches the notebook while it runs.
WAITS = """\
import sys
import libdsm
with libdsm.init() as dsm:
    if dsm.rank == 0:
        print("first line", flush=True)
        with open(sys.argv[1]) as fifo:
            print("then", fifo.readline().strip())
    dsm.barrier()
"""


@pytest.fixture(scope="module")
def ip():
    shell = get_ipython()
    shell.run_line_magic("load_ext", "libdsm_services.notebook")
    return shell


def test_argv_takes_options_then_cell_then_program_arguments():
    assert notebook.job_argv("-n 4 --timeout 9 -- a 'b c'", "/t/cell.py", python="py") == [
        "py", "-m", "libdsm_services", "-n", "4", "--timeout", "9", "/t/cell.py", "a", "b c"]
    assert notebook.job_argv("-n 2", "/t/cell.py", python="py") == [
        "py", "-m", "libdsm_services", "-n", "2", "/t/cell.py"]


def test_env_puts_this_package_first_on_the_path():
    env = notebook.job_env({"PYTHONPATH": "/elsewhere", "HOME": "/h"})
    first, rest = env["PYTHONPATH"].split(os.pathsep)
    assert os.path.isfile(os.path.join(first, "libdsm_services", "notebook.py"))
    assert (rest, env["HOME"]) == ("/elsewhere", "/h")
    assert os.path.isdir(notebook.job_env({})["PYTHONPATH"])


def test_cell_runs_on_two_ranks_with_prefixed_output(ip, capsys):
    ip.run_cell_magic("dsmexec", "-n 2 --timeout 100", HELLO)
    out, err = capsys.readouterr()
    assert "[rank 0] hello from rank 0 of 2" in out.splitlines()
    assert "[rank 1] hello from rank 1 of 2" in out.splitlines()
    assert "exit status" not in err, err


def test_failing_cell_shows_the_traceback_and_exit_status(ip, capsys):
    ip.run_cell_magic("dsmexec", "-n 2 --timeout 100", FAILS)
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert "[rank 1] Traceback (most recent call last):" in lines, err
    assert "[rank 1] ValueError: cell failed on purpose" in lines, err
    # (followed by "(rank 0 lost it: ...)" when rank 0's report came first)
    assert any(line.startswith("dsmexec: rank 1 (host localhost) exited with status 1")
               for line in lines), err
    assert lines[-1] == "dsmexec: exit status 1", err


class _Signalling:
    """A cell's stdout that answers rank 0 through the fifo (an fd open for
    reading and writing, so that neither side blocks in open) once its
    first line has arrived."""

    def __init__(self, fd):
        self.fd, self.text, self.answered = fd, "", False

    def write(self, text):
        self.text += text
        if "[rank 0] first line\n" in self.text and not self.answered:
            os.write(self.fd, b"seen\n")
            self.answered = True

    def flush(self):
        pass


def test_output_streams_while_the_job_runs(ip, tmp_path, monkeypatch):
    fifo = str(tmp_path / "seen")
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    out = _Signalling(fd)
    monkeypatch.setattr(sys, "stdout", out)
    try:
        ip.run_cell_magic("dsmexec", "-n 2 --timeout 60 -- %s" % fifo, WAITS)
    finally:
        monkeypatch.undo()
        os.close(fd)
    assert "[rank 0] then seen" in out.text.splitlines(), out.text
