"""The runtime with every rank started through the private sshd."""
import os

import pytest

from dsmrun import ROOT, rank_lines, run

pytestmark = pytest.mark.timeout(150)


def logins(sshd):
    with open(sshd.log) as f:
        return f.read().count("Accepted publickey")


@pytest.mark.parametrize("n", [2, 4])
def test_double_touch_over_ssh(tmp_path, sshd, n):
    before = logins(sshd)
    p = run(tmp_path, n, os.path.join(ROOT, "examples", "double_touch.py"),
            opts=sshd.options(), host="127.0.0.1")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "integer value")
    assert sorted(got) == list(range(n))
    assert all(t.endswith("integer value: %d" % (n * (n + 1) // 2)) for t in got.values())
    # One login: the ranks share one connection to their host.  That they came
    # through it at all is proven by their finding dsmexec: an ssh rank takes
    # dsmexec's address from $SSH_CLIENT, which only sshd sets.
    assert logins(sshd) - before == 1


@pytest.mark.parametrize("name,args", [("matmul.py", ["96"]), ("counter_lock.py", ["200"]),
                                       ("named_regions.py", ["5000"])])
def test_examples_over_ssh(tmp_path, sshd, name, args):
    p = run(tmp_path, 3, os.path.join(ROOT, "examples", name), *args, opts=sshd.options(),
            host="127.0.0.1")
    assert p.returncode == 0, p.stderr
    assert "WRONG" not in p.stdout and p.stdout.count(": ok") >= 1, p.stdout
