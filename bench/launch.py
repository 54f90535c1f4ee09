"""Launch time of 8 ranks through ssh, against one serial ssh of one rank.

    .venv/bin/python bench/launch.py [--runs 5]

A private sshd on 127.0.0.1 (tests/sshd.py) serves both sides:
  launch 8 ranks via ssh   dsmexec --ssh-all on a machine file naming
                           127.0.0.1 eight times, running bench/noop_rank.py
                           (init, then finalize): wall time of the whole job
  reference                one plain `ssh 127.0.0.1 PYTHON -c pass` with the
                           same -i/-o options
Both are the median of --runs runs, after one untimed run of each.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
import reference                   # noqa: E402
from sshd import private_sshd      # noqa: E402

RANKS = 8
TIMEOUT = 120


def wall(argv):
    """Seconds one run of argv takes; it must succeed."""
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=TIMEOUT)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit("%s failed (%d):\n%s%s" % (argv[:3], r.returncode, r.stdout, r.stderr))
    return seconds


def median_wall(argv, runs):
    wall(argv)                     # warm-up: page cache, first connection
    return statistics.median(wall(argv) for _ in range(runs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="dsm-launch-") as tmp, private_sshd() as sshd:
        machines = os.path.join(tmp, "machines8")
        with open(machines, "w") as f:
            f.write("127.0.0.1\n" * RANKS)
        job = [python, os.path.join(REPO, "dsmexec.py"), *sshd.options(), machines,
               os.path.join(HERE, "noop_rank.py")]
        one = ["ssh", *sshd.ssh_args(), "127.0.0.1", python, "-c", "pass"]
        launch = median_wall(job, a.runs)
        ref = median_wall(one, a.runs)
    print("launch %d ranks via ssh (init + finalize): %.3f s   one serial ssh: %.3f s  "
          "(%.1fx, median of %d)" % (RANKS, launch, ref, launch / ref, a.runs))
    reference.emit(row="launch %d ranks via ssh" % RANKS, seconds=launch, ref_seconds=ref)


if __name__ == "__main__":
    main()
