"""Restart after a SIGKILLed rank, from buddy memory, against the heartbeat
time plus the time to read the checkpoint's bytes back, in the same run.

    .venv/bin/python bench/restart.py [--mib 256]

dsmexec --restarts 1 runs bench/checkpoint.py's restart job on
bench/machines-2hosts (two host names, one machine: each half of the MIB
also goes to the other rank's memory) with DSM_HEARTBEAT_S=1.  After its
checkpoint the driver reads the generation's files from /dev/shm (the
reference's bytes), then SIGKILLs rank 1; the result is the time from the
kill to the restarted rank 0's return from init(), the region restored.
"""
import argparse
import glob
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import reference                   # noqa: E402

HEARTBEAT_S = 1.0


def read_back_seconds(stores):
    """Seconds to read the newest generation's files in stores, one copy of each."""
    newest = {d: max((g for g in os.listdir(d) if g.endswith(".json")), default=None)
              for d in stores}
    files = {os.path.basename(f): f for d, g in newest.items() if g
             for f in glob.glob(os.path.join(d, g[:-5], "*"))}
    t = time.perf_counter()
    for f in files.values():
        with open(f, "rb") as fh:
            fh.read()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    a = ap.parse_args()
    before = set(glob.glob("/dev/shm/dsm-ckpt-*"))
    cmd = [sys.executable, os.path.join(REPO, "dsmexec.py"), "--restarts", "1",
           os.path.join(HERE, "machines-2hosts"), os.path.join(HERE, "checkpoint.py"),
           "restart", "--mib", str(a.mib)]
    env = dict(os.environ, DSM_HEARTBEAT_S=str(HEARTBEAT_S))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids, killed_at, restored, ref, relaunch = {}, None, None, None, None
    for line in proc.stdout:
        sys.stdout.write(line)
        rank, _, text = line.partition("] ")
        if text.startswith("pid "):
            pids[int(rank[6:])] = int(text.split()[1])
        elif text.startswith("checkpointed") and killed_at is None:
            ref = HEARTBEAT_S + read_back_seconds(set(glob.glob("/dev/shm/dsm-ckpt-*")) - before)
            killed_at = time.time()
            os.kill(pids[1], signal.SIGKILL)
            proc.stdin.close()
        elif "restarting it from" in line:
            relaunch = time.time() - killed_at
        elif text.startswith("restored at "):
            restored = float(text.split()[2].rstrip(",")) - killed_at
    if proc.wait() != 0 or restored is None:
        raise SystemExit("the restart job failed (%d)" % proc.returncode)
    print("restart after a SIGKILLed rank, %d MiB from buddy memory: %.3f s (dsmexec relaunched "
          "after %.3f s); heartbeat %.1f s + reading the bytes back: %.3f s"
          % (a.mib, restored, relaunch, HEARTBEAT_S, ref))
    reference.emit(row="restart from buddy memory", mib=a.mib, seconds=restored,
                   ref_seconds=ref)


if __name__ == "__main__":
    main()
