"""Checkpoints (libdsm/checkpoint.py, ckptstore.py) and dsmexec --restarts
(services/restart.py): the store's files, the restore at init, a corrupt
part refused, and ranks SIGKILLed at random moments of a Jacobi run that
then ends with the fault-free run's grid, bit for bit."""
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from conftest import DSMEXEC, REPO, machine_file, wait_gone
from dsmrun import rank_lines, run
from libdsm.ckptmanifest import buddy_of
from libdsm.ckptruns import runs_of
from libdsm.ckptstore import CheckpointError, Store
from libdsm_services import cli, rankreport, restart

JACOBI = os.path.join(REPO, "examples", "jacobi_ckpt.py")
PROG = os.path.join(REPO, "tests", "ckpt_prog.py")
SMALL = {"DSM_SIZE": "64M"}
"""Jobs here run in a 64 MiB region, small to map and set up (a checkpoint
saves only the pages with data: test_only_pages_with_data_are_saved)."""


def shm_stores(job):
    """The buddy memory of job (DSM_CHECKPOINT_JOB) on this machine: other
    suites running beside this one have theirs."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("dsm-ckpt-%s-" % job)}


def fresh_job():
    """A job name of this test's own, and the environment that gives it."""
    job = "t" + uuid.uuid4().hex[:12]
    return job, {restart.JOB_VAR: job}


# ---------------------------------------------------------------- units

def test_store_writes_whole_files_and_refuses_a_bad_checksum(tmp_path):
    store = Store(str(tmp_path / "ck"))
    assert store.generations() == []
    n, crc = store.write(1, "part-0000", [b"abc", memoryview(b"defg")])
    assert n == 7 and store.read(1, "part-0000", 7, crc) == b"abcdefg"
    assert store.generations() == []            # no manifest: not complete
    store.write_manifest(1, {"generation": 1})
    assert store.generations() == [1] and store.manifest(1) == {"generation": 1}
    assert not [f for f in os.listdir(store.gen_dir(1)) if ".tmp." in f]
    path = store.path(1, "part-0000")
    with open(path, "r+b") as f:
        f.write(b"x")
    with pytest.raises(CheckpointError, match="checksum .* corrupt"):
        store.read(1, "part-0000", 7, crc)
    with pytest.raises(CheckpointError, match="8"):
        store.read(1, "part-0000", 8, crc)
    store.refuse(1)
    assert store.generations() == [] and os.path.exists(store.manifest_path(1) + ".refused")


def test_buddy_memory_parts_go_without_a_checksum_but_their_size_is_checked(tmp_path):
    store = Store(str(tmp_path))
    assert store.write(1, "part-0000", [b"abc", b"de"], checksum=False) == (5, None)
    assert store.read(1, "part-0000", 5, None) == b"abcde"
    sink = bytearray(5)
    store.read_into(1, "part-0000", 5, None, [sink])
    assert sink == b"abcde"
    with pytest.raises(CheckpointError, match="5 bytes, the manifest says 6"):
        store.read_into(1, "part-0000", 6, None, [bytearray(6)])


def test_a_retired_generations_files_are_written_over(tmp_path):
    store = Store(str(tmp_path))
    store.write(1, "part-0000", [b"x" * 9000], checksum=False)
    store.write_manifest(1, {})
    inode = os.stat(store.path(1, "part-0000")).st_ino
    assert store.write(2, "part-0000", [b"y" * 10], checksum=False, recycle=True,
                       keep=1) == (10, None)
    assert os.path.exists(store.path(1, "part-0000"))   # gen 1 is still in use
    store.write_manifest(2, {})
    store.retire(2)
    assert store.generations() == [2]
    assert store.write(3, "part-0000", [b"z" * 5], checksum=False, recycle=True,
                       keep=2) == (5, None)
    assert os.stat(store.path(3, "part-0000")).st_ino == inode
    assert store.read(3, "part-0000", 5, None) == b"zzzzz"     # truncated to what was written
    assert not os.path.exists(store.path(1, "part-0000"))
    assert store.read(2, "part-0000", 10, None) == b"y" * 10
    # gen 3 has no manifest here, but the caller keeps it (another host shows it)
    inode = os.stat(store.path(3, "part-0000")).st_ino
    store.write(4, "part-0000", [b"v" * 3], checksum=False, recycle=True, keep=3)
    assert store.read(3, "part-0000", 5, None) == b"zzzzz"
    assert os.stat(store.path(4, "part-0000")).st_ino != inode
    store.drop({3})
    assert sorted(os.listdir(str(tmp_path))) == ["gen-000003"]


def test_store_keeps_two_generations(tmp_path):
    store = Store(str(tmp_path))
    for gen in range(1, 5):
        store.write(gen, "part-0000", [b"x"])
        store.write_manifest(gen, {})
        store.drop({gen, gen - 1})
    assert store.generations() == [4, 3]
    assert sorted(os.listdir(str(tmp_path))) == ["gen-000003", "gen-000003.json",
                                                  "gen-000004", "gen-000004.json"]
    assert restart.newest_generation(str(tmp_path)) == 4
    store.write(6, "part-0000", [b"x"])         # begun, never completed
    assert store.generations() == [4, 3] and store.highest() == 6


def test_runs_and_buddies():
    assert runs_of([1, 1, 1, 0, 0, 1, 0, 1, 1]) == [[0, 3], [5, 1], [7, 2]]
    assert runs_of([0, 0]) == [] and runs_of([1]) == [[0, 1]]
    assert buddy_of(0, ["a", "a"]) is None              # one host: its memory alone
    assert [buddy_of(r, ["a", "a", "b", "b"]) for r in range(4)] == [2, 2, 0, 0]


def test_command_line_options(tmp_path):
    prog = tmp_path / "x.py"                # dsmexec checks that the program is there
    prog.write_text("")
    opts = cli.parse_options(["--restarts", "2", "--checkpoint-dir", str(tmp_path),
                              "-n", "2", str(prog)])
    assert opts.restart.restarts == 2
    assert opts.environ[restart.DIR_VAR] == str(tmp_path)
    assert opts.environ[restart.JOB_VAR] == opts.restart.job
    plain = cli.parse_options(["-n", "2", str(prog)])
    assert plain.restart.restarts == 0 and restart.DIR_VAR not in plain.environ
    assert plain.restart.job != opts.restart.job
    with pytest.raises(SystemExit):
        cli.parse_options(["--restarts", "-1", "-n", "2", str(prog)])


# ---------------------------------------------------------------- restore at init

@pytest.mark.timeout(200)
@pytest.mark.parametrize("consistency", ["sequential", "release"])
@pytest.mark.parametrize("saved,now", [(2, 3), (3, 2)], ids=["more", "fewer"])
def test_restore_with_another_rank_count(tmp_path, consistency, saved, now):
    """The region comes back whole; state i goes to rank i: a new rank gets
    None, a missing rank's state is dropped."""
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), "DSM_CONSISTENCY": consistency, **SMALL}
    p = run(tmp_path, saved, PROG, "save", env=env)
    assert p.returncode == 0, p.stderr
    p = run(tmp_path, now, PROG, "load", env=env)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "state")
    assert len(got) == now, p.stdout
    # the second checkpoint, not the writes after it; arrays still on the region
    for r in range(min(saved, now)):
        assert got[r] == "state rank %d second True sum -3000 on_region True alloc 'saved'" % r
    for r in range(saved, now):
        assert got[r].startswith("state None")         # no state was saved for it
    assert "restored checkpoint generation 2 (%d ranks saved it, %d now)" % (saved, now) \
        in p.stderr
    assert rank_lines(p.stdout, "stats")[1] == "stats checkpoints 0 restores 1"


@pytest.mark.timeout(200)
@pytest.mark.parametrize("n,share,homes", [
    (2, {}, "0*64,1*64"),
    # host-shared on 2 virtual hosts x 2 ranks: each host's rows at its leader
    (4, {"DSM_SHARE": "host", "DSM_VHOSTS": "2"}, "0*64,2*64")])
def test_placed_homes_and_a_system_v_segment_come_back(tmp_path, n, share, homes):
    """An array with row_block homes (not the default round-robin) and a
    System V segment: a restart with the same rank count finds the homes
    where they were and the segment there (shmget without IPC_CREAT)."""
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), **SMALL, **share}
    want = "homes %s sum %d segment sysv-1" % (homes, sum(range(1 << 16)))
    for how in ("fresh", "restored"):
        p = run(tmp_path, n, PROG, "layout", env=env)
        assert p.returncode == 0, p.stderr
        assert rank_lines(p.stdout, "layout") == {r: "layout %s %s" % (how, want)
                                                  for r in range(n)}, p.stdout


@pytest.mark.timeout(200)
def test_a_generation_of_another_region_size_is_refused_and_kept(tmp_path):
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), **SMALL}
    assert run(tmp_path, 2, PROG, "save", env=env).returncode == 0
    p = run(tmp_path, 2, PROG, "load", env={**env, "DSM_SIZE": "32M"})
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("its manifest does not match this job") == 2, p.stderr
    m = re.search(r"\(format 1, (\d+) pages of 4096 bytes; this job maps (\d+) pages of 4096: "
                  r"give it the same DSM_SIZE\)", p.stderr)
    assert m and int(m[1]) > int(m[2]), p.stderr
    assert "no usable checkpoint generation: starting afresh" in p.stderr
    assert all(line.startswith("state None, region zero True")
               for line in rank_lines(p.stdout, "state").values()), p.stdout
    # not the generations' fault: they stay, and a job of their size restores them
    p = run(tmp_path, 2, PROG, "load", env=env)
    assert "restored checkpoint generation 2 (2 ranks saved it, 2 now)" in p.stderr


@pytest.mark.timeout(200)
@pytest.mark.parametrize("consistency", ["sequential", "release"])
def test_only_pages_with_data_are_saved(tmp_path, consistency):
    """A 1 GiB region holding a 16 MB array: each rank saves its 8 MB half
    (and a few pages of the allocator's), not 512 MB; restored exactly."""
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), "DSM_CONSISTENCY": consistency,
           "DSM_SIZE": "1G"}
    p = run(tmp_path, 2, PROG, "sparse", env=env)
    assert p.returncode == 0, p.stderr
    saved = rank_lines(p.stdout, "sparse")
    store = Store(str(tmp_path / "ck"))
    doc = store.manifest(store.generations()[0])
    for r, part in enumerate(doc["parts"]):
        size = os.path.getsize(store.path(doc["generation"], part["name"]))
        assert 8 << 20 <= size == part["nbytes"] < 9 << 20, (r, size)
        assert sum(n for _, n in part["runs"]) * doc["page_size"] == size
        state = os.path.getsize(store.path(doc["generation"], "state-%04d" % r))
        assert saved[r].endswith("saved %d restored 0" % (size + state)), saved[r]
    p = run(tmp_path, 2, PROG, "sparse", env=env)
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "sparse")
    sha = saved[0].split()[3]
    for r in (0, 1):
        assert got[r].startswith("sparse restored sha256 %s saved 0 restored " % sha), got[r]
        assert int(got[r].split()[-1]) < 9 << 20


@pytest.mark.timeout(200)
def test_checkpoint_and_restore_are_trace_events(tmp_path):
    from libdsm._binding import lib
    assert rankreport.GEN_SHIFT == lib.DSM_EV_GEN_SHIFT
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), **SMALL}
    for what in ("checkpoint", "restore"):
        out = str(tmp_path / ("%s.json" % what))
        p = run(tmp_path, 2, PROG, "sparse", env=env, opts=("--trace", out))
        assert p.returncode == 0, p.stderr
        sizes = {r: int(line.split()[-3 if what == "checkpoint" else -1])
                 for r, line in rank_lines(p.stdout, "sparse").items()}
        with open(out) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "checkpoint"]
        assert sorted((e["pid"], e["name"], e["args"]["generation"], e["args"]["bytes"])
                      for e in events) == [(r, what, 1, sizes[r]) for r in (0, 1)], events
        assert all(e["dur"] > 0 and e["ts"] >= 0 for e in events)


@pytest.mark.timeout(200)
def test_every_generation_refused_starts_afresh_on_a_clean_region(tmp_path):
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), **SMALL}
    assert run(tmp_path, 2, PROG, "save", env=env).returncode == 0
    store = Store(str(tmp_path / "ck"))
    for gen in store.generations():             # both: a bit flipped in rank 1's part
        with open(store.path(gen, "part-0001"), "r+b") as f:
            byte = f.read(1)
            f.seek(0)
            f.write(bytes([byte[0] ^ 1]))
    p = run(tmp_path, 2, PROG, "load", env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("refused: rank 1: ") == 2, p.stderr
    assert "no usable checkpoint generation: starting afresh" in p.stderr
    # what the refused generations wrote is gone: the heap starts again at 0
    # (each rank mallocs 8 bytes, at once: one gets 0, the other the next granule)
    assert set(rank_lines(p.stdout, "state").values()) == {
        "state None, region zero True, first malloc at %d" % o for o in (0, 16)}, p.stdout


@pytest.mark.timeout(200)
def test_an_unreadable_manifest_is_refused_and_the_generation_before_used(tmp_path):
    env = {"DSM_CHECKPOINT_DIR": str(tmp_path / "ck"), **SMALL}
    assert run(tmp_path, 2, PROG, "save", env=env).returncode == 0
    store = Store(str(tmp_path / "ck"))
    with open(store.manifest_path(2), "r+b") as f:
        f.truncate(os.path.getsize(store.manifest_path(2)) // 2)
    p = run(tmp_path, 2, PROG, "load", env=env)
    assert p.returncode == 0, p.stderr
    assert "checkpoint generation 2 refused: %s: unreadable manifest: " \
        % store.manifest_path(2) in p.stderr, p.stderr
    assert "restored checkpoint generation 1 (2 ranks saved it, 2 now)" in p.stderr
    for r, line in rank_lines(p.stdout, "state").items():     # the first checkpoint's
        assert line.startswith("state rank %d second None sum " % r), line
        assert line.endswith("on_region True alloc 'first'"), line


def _jacobi(tmp_path, sweeps, *opts, n=3, out=None, progress=False, env=None):
    args = ["128", str(sweeps), "5"] + (["--out", out] if out else []) + \
        (["--progress"] if progress else [])
    return run(tmp_path, n, JACOBI, *args, opts=opts, env={**SMALL, **(env or {})}, timeout=150)


@pytest.mark.timeout(300)
def test_a_flipped_byte_is_refused_and_the_generation_before_used(tmp_path):
    ck = str(tmp_path / "ck")
    p = _jacobi(tmp_path, 30, "--checkpoint-dir", ck)
    assert p.returncode == 0, p.stderr
    assert Store(ck).generations() == [5, 4]            # at sweeps 25 and 20
    part = Store(ck).path(5, "part-0001")
    with open(part, "r+b") as f:
        f.seek(os.path.getsize(part) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    p = _jacobi(tmp_path, 40, "--checkpoint-dir", ck, progress=True)
    assert p.returncode == 0, p.stderr
    assert "checkpoint generation 5 refused: rank 1: %s: checksum" % part in p.stderr
    assert "restored checkpoint generation 4" in p.stderr
    assert set(rank_lines(p.stdout, "restarted at").values()) == {"restarted at sweep 20"}
    # the refused one stays out of use; the new ones (sweeps 25, 30, 35) follow it
    assert Store(ck).generations() == [8, 7]
    fresh = _jacobi(tmp_path, 40)
    assert rank_lines(p.stdout, "sha256")[0] == rank_lines(fresh.stdout, "sha256")[0]


# ---------------------------------------------------------------- dsmexec --restarts

def _random_kill(rng, nranks, sweeps):
    """(trigger line, victim): a random rank reporting a random sweep (not
    among the last few, so that the victim is still there) or checkpoint."""
    if rng.random() < 0.5:
        trigger = "[rank %d] checkpoint %d" % (rng.randrange(nranks),
                                               5 * rng.randrange(1, sweeps // 5))
    else:
        trigger = "[rank %d] sweep %d" % (rng.randrange(nranks), rng.randrange(1, sweeps - 4))
    return trigger, rng.randrange(nranks)


def _run_killing(tmp_path, opts, hosts, out, trigger, victim, before_kill=None,
                 deadline_s=150, sweeps=40, args=(), env=None, prefix=(), then=()):
    """Run Jacobi under --restarts 3 (after prefix: salloc...; on hosts, None
    for the allocation's); SIGKILL rank victim (None: none) when the trigger
    line comes, after before_kill(), if given; then the same for each
    (trigger, victim, before_kill) of then in turn, each looked for in the
    lines after the kill before it (the victim's pid too: a restart's).
    dsmexec's stdin (rank 0's, which --pause-at reads) closes after the last.
    (returncode, output)."""
    where = [machine_file(tmp_path, *hosts)] if hosts else []
    cmd = [*prefix, sys.executable, DSMEXEC, "--restarts", "3", *opts, *where,
           JACOBI, "128", str(sweeps), "5", "--out", out, "--progress", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, **SMALL, **(env or {})})
    events = [(trigger, victim, before_kill), *then]
    seen, pending, pids, fired, armed = b"", b"", {}, 0, False
    deadline = time.monotonic() + deadline_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            proc.kill()
            proc.wait()
            pytest.fail("trial (%s) ran past %g s: %s"
                        % (events[min(fired, len(events) - 1)][:2], deadline_s,
                           seen.decode()[-3000:]))
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        *lines, pending = (pending + chunk).split(b"\n")
        for line in (raw.decode(errors="replace") for raw in lines):
            if line.startswith("[rank ") and "] pid " in line:
                pids[int(line[6:line.index("]")])] = int(line.rsplit(" ", 1)[1])
            if fired == len(events):
                continue
            trigger, victim, before = events[fired]
            armed = armed or line == trigger
            if armed and (victim is None or victim in pids):
                if before:
                    before()
                if victim is not None:
                    os.kill(pids[victim], signal.SIGKILL)
                pids, armed, fired = {}, False, fired + 1
                if fired == len(events):
                    proc.stdin.close()  # (--pause-at: rank 0 reads it)
    proc.stdin.close()
    proc.wait()
    assert fired == len(events), "the trigger %r never came: %s" % (events[fired][0],
                                                                    seen.decode())
    return proc.returncode, seen.decode(errors="replace")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("where", ["directory", "buddy"])
def test_random_sigkill_then_restart_gives_the_fault_free_grid(tmp_path, where):
    hosts = ["localhost"] * 3 if where == "directory" else ["localhost", "127.0.0.1", "localhost"]
    reference = str(tmp_path / "ref.npy")
    p = _jacobi(tmp_path, 40, out=reference)
    assert p.returncode == 0, p.stderr
    rng = random.Random(20261207 + len(where))
    for trial in range(3):
        out = str(tmp_path / ("grid-%d.npy" % trial))
        opts = ["--checkpoint-dir", str(tmp_path / ("ck-%d" % trial))] \
            if where == "directory" else []
        trigger, victim = _random_kill(rng, len(hosts), 40)
        # the first run waits before sweep 38 until the kill: the test reads
        # the output late on a busy machine, and must not find the job ended
        job, env = fresh_job()
        status, output = _run_killing(tmp_path, opts, hosts, out, trigger, victim,
                                      args=["--pause-at", "38"], env=env)
        what = "trial %d (%s, kill rank %d)" % (trial, trigger, victim)
        assert status == 0, "%s: %s" % (what, output[-3000:])
        # one failure, one restart (which rank dsmexec blames is services/job.py's
        # business: a rank the kill takes down can be judged first)
        assert output.count("dsmexec: the job failed (rank ") == 1, (what, output)
        assert "2 restarts left" in output and "1 restart left" not in output, what
        assert np.load(out).tobytes() == np.load(reference).tobytes(), what
        assert wait_gone(JACOBI, timeout=10) == []
        assert shm_stores(job) == set()     # buddy memory went with the job


@pytest.mark.timeout(600)
def test_a_sigkill_in_host_shared_memory_on_two_virtual_hosts_restarts_to_the_same_grid(
        tmp_path):
    """share=host across 2 virtual hosts x 2 ranks, where the leaders home
    every page and the other ranks map their host's copy: a rank SIGKILLed
    at a random moment (a leader or not), and the restart from buddy memory
    ends on the fault-free run's grid, bit for bit."""
    host = {"DSM_SHARE": "host", "DSM_VHOSTS": "2"}
    reference = str(tmp_path / "ref.npy")
    p = _jacobi(tmp_path, 40, "--stats", n=4, out=reference, env=host)
    assert p.returncode == 0, p.stderr
    # host-shared across hosts indeed: only the leaders (0, 2) send pages
    pages_out = {int(m[0]): int(m[1]) for m in re.findall(
        r"^(\d) +localhost +\d+ +\d+ +(\d+) ", p.stdout + p.stderr, re.M)}
    assert pages_out[1] == pages_out[3] == 0 < pages_out[0] + pages_out[2], pages_out
    rng = random.Random(20261207)
    for trial, victim in enumerate((0, 1)):             # a leader, then not
        out = str(tmp_path / ("grid-%d.npy" % trial))
        trigger = _random_kill(rng, 4, 40)[0]
        job, env = fresh_job()
        status, output = _run_killing(tmp_path, [], ["localhost"] * 4, out, trigger, victim,
                                      args=["--pause-at", "38"], env={**host, **env})
        what = "trial %d (%s, kill rank %d)" % (trial, trigger, victim)
        assert status == 0, "%s: %s" % (what, output[-3000:])
        assert output.count("dsmexec: the job failed (rank ") == 1, (what, output)
        assert np.load(out).tobytes() == np.load(reference).tobytes(), what
        assert wait_gone(JACOBI, timeout=10) == []
        assert shm_stores(job) == set()


@pytest.mark.timeout(200)
def test_with_the_restarts_spent_the_exit_status_is_the_last_runs(tmp_path):
    """Rank 1 exits with status 3 after each run's checkpoint: two restarts,
    each from the generation the run before made, then dsmexec exits 3."""
    job, env = fresh_job()
    p = run(tmp_path, 2, PROG, "fail", env={**SMALL, **env}, opts=("--restarts", "2"))
    assert p.returncode == 3, p.stderr
    assert [line for line in p.stdout.splitlines() if line.startswith("[rank 0] run ")] == \
        ["[rank 0] run fresh", "[rank 0] run restored", "[rank 0] run restored"], p.stdout
    said = [line for line in p.stderr.splitlines() if "dsmexec: the job failed" in line]
    assert len(said) == 2, p.stderr
    for line, (gen, left) in zip(said, [(1, "1 restart left"), (2, "0 restarts left")]):
        assert "(rank 1 (host localhost" in line and "exited with status 3" in line, line
        assert line.endswith("restarting it from checkpoint generation %d in /dev/shm/"
                             "dsm-ckpt-%s-localhost; %s" % (gen, job, left)), line
    assert shm_stores(job) == set()


def _listing(job, host):
    """host's buddy memory of job: {name: its files (a generation's directory)
    or None (a manifest)}."""
    root = os.path.join("/dev/shm", "dsm-ckpt-%s-%s" % (job, host))
    return {n: sorted(os.listdir(os.path.join(root, n)))
            if os.path.isdir(os.path.join(root, n)) else None for n in os.listdir(root)}


def _losing(job, host, lost):
    """before_kill: host's buddy memory of job goes, its listing appended to lost first."""
    def lose():
        lost.append(_listing(job, host))
        shutil.rmtree(os.path.join("/dev/shm", "dsm-ckpt-%s-%s" % (job, host)))
    return lose


PARTS = ["part-0000", "part-0001", "part-0002", "state-0000", "state-0001", "state-0002"]


@pytest.mark.timeout(300)
def test_a_hosts_memory_lost_restores_from_the_buddy_copy(tmp_path):
    """Host 127.0.0.1 (rank 1) loses its rank and its memory while the job
    waits between checkpoints; the copy of rank 1's part on localhost restores it."""
    hosts = ["localhost", "127.0.0.1", "localhost"]
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    (job, env), lost = fresh_job(), []
    status, output = _run_killing(tmp_path, [], hosts, out, "[rank 0] paused at sweep 12", 1,
                                  before_kill=_losing(job, "127.0.0.1", lost),
                                  args=["--pause-at", "12"], env=env)
    assert status == 0, output
    assert sorted(lost[0]) == ["gen-000001", "gen-000001.json", "gen-000002", "gen-000002.json"]
    assert "restarting it from checkpoint generation 2 in /dev/shm/dsm-ckpt-" in output
    assert "restored checkpoint generation 2" in output
    assert output.count("restarted at sweep 10") == 3, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert shm_stores(job) == set()


@pytest.mark.timeout(300)
def test_two_hosts_lost_in_a_row_with_no_checkpoint_between(tmp_path):
    """Host 127.0.0.1 (rank 1) loses its rank and its memory at sweep 12; the
    restart restores generation 2 from localhost's copies and copies it to
    127.0.0.1 again.  At sweep 12 of that run, before its next checkpoint,
    localhost loses rank 0 and its memory too: the second restart restores
    generation 2 from 127.0.0.1, and the grid is the fault-free one."""
    hosts = ["localhost", "127.0.0.1", "localhost"]
    reference, out = str(tmp_path / "ref.npy"), str(tmp_path / "grid.npy")
    assert _jacobi(tmp_path, 40, out=reference).returncode == 0
    (job, env), first, second, copies = fresh_job(), [], [], []
    lose_local = _losing(job, "localhost", second)

    def lose_second():
        copies.append(_listing(job, "127.0.0.1"))
        lose_local()

    status, output = _run_killing(
        tmp_path, [], hosts, out, "[rank 0] paused at sweep 12", 1,
        before_kill=_losing(job, "127.0.0.1", first), args=["--pause-at", "12"], env=env,
        then=[("[rank 0] paused at sweep 12", 0, lose_second)])
    assert status == 0, output
    assert sorted(first[0]) == ["gen-000001", "gen-000001.json", "gen-000002", "gen-000002.json"]
    # the restart made 127.0.0.1 whole again, and showed generation 2 alone
    assert copies == [{"gen-000002": PARTS, "gen-000002.json": None}], copies
    assert second == [{"gen-000001": PARTS, "gen-000002": PARTS, "gen-000002.json": None}]
    assert output.count("dsmexec: the job failed (rank ") == 2, output
    assert output.count("restarting it from checkpoint generation 2 in /dev/shm/") == 2, output
    assert output.count("restored checkpoint generation 2") == 2, output
    assert output.count("restarted at sweep 10") == 6, output
    assert "1 restart left" in output, output
    assert np.load(out).tobytes() == np.load(reference).tobytes()
    assert shm_stores(job) == set()
