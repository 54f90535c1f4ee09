"""Connections that are no rank, at every listener while a job starts (issue 11).

Strangers (tests/strangers.py) connect to dsmexec's master socket while the
ranks register, and to a rank's peer listener while the mesh is built.  The
job must go on, each stranger be dropped and logged, and Ctrl-C still work.

To keep the listeners open, the ranks start through a wrapper "python" that
writes its argv (where the master listens) to a file and waits for go-RANK
(or until dsmexec is gone).
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import DSMEXEC, REPO, kill_all, machine_file, pids_with, wait_for_lines, wait_gone
from strangers import Strangers, fuzz

pytestmark = pytest.mark.timeout(60)
STARTUP_PROG = os.path.join(REPO, "tests", "startup_prog.py")


class HeldJob:
    """dsmexec with n ranks (local, or over ssh with `opts`), each held before it
    starts until go(rank); `nofile`: the ranks' limit of open files (ulimit -n)."""

    def __init__(self, tmp_path, n, prog, *args, opts=(), nofile=None):
        self.dir, self.err = tmp_path, b""
        wrapper = tmp_path / "python"
        wrapper.write_text(
            "#!/bin/sh\n"
            'r=; prev=; for a in "$@"; do [ "$prev" = --rank ] && r=$a; prev=$a; done\n'
            # over ssh the dialogue waits for READY: say it before holding
            + ("echo DSMEXEC-READY $r\n" if opts else "") +
            'echo "$@" > %s/argv-$r\n'
            "while [ ! -e %s/go-$r ]; do\n"
            "  kill -0 $PPID 2>/dev/null || exit 1; sleep 0.02\n"    # not held past dsmexec
            "done\n"
            "%s"
            'exec %s "$@"\n' % (tmp_path, tmp_path, "ulimit -n %d\n" % nofile if nofile else "",
                                sys.executable))
        wrapper.chmod(0o755)
        hosts = machine_file(tmp_path, *["localhost"] * n)
        self.proc = subprocess.Popen(
            [sys.executable, DSMEXEC, *opts, "--python", str(wrapper), hosts, prog, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        self.master = ("127.0.0.1", self._master_port())

    def _master_port(self):
        """Where dsmexec listens, from rank 0's argv (the test's timeout bounds the wait)."""
        path = self.dir / "argv-0"
        while not (path.exists() and path.read_text().endswith("\n")):
            if self.proc.poll() is not None:
                pytest.fail("dsmexec ended before rank 0 started: %r" % self.proc.stderr.read())
            time.sleep(0.02)
        return int(re.search(r"--master (?:127\.0\.0\.1|ssh):(\d+)", path.read_text()).group(1))

    def go(self, *ranks):
        for r in ranks:
            (self.dir / ("go-%d" % r)).touch()

    def listeners(self, n):
        """The peer listeners of n ranks in rank order, from their `listener HOST PORT` lines."""
        seen = wait_for_lines(self.proc, n, "listener")
        found = dict(re.findall(rb"\[rank (\d+)\] listener [\d.]+ (\d+)", seen))
        return [("127.0.0.1", int(found[b"%d" % r])) for r in range(n)], seen

    def wait_err(self, pattern, count):
        """Read dsmexec's stderr until `pattern` (a regex) matched count lines (the test's
        timeout bounds the wait)."""
        while len(re.findall(pattern, self.err, re.M)) < count:
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                pytest.fail("dsmexec ended early: %r" % self.err)
            self.err += chunk

    def finish(self):
        """Wait for dsmexec; (status, stdout, stderr).  No process of the job may be left:
        one that is waits for the test's timeout, then is killed."""
        try:
            out, err = self.proc.communicate()
        finally:
            self.proc.kill()
            try:
                wait_gone(str(self.dir))
            finally:
                kill_all(pids_with(str(self.dir)))
        return self.proc.returncode, out.decode(), (self.err + err).decode()


MASTER_REFUSED = rb"^dsmexec: refused a connection from 127\.0\.0\.1:\d+: "
RANK0_REFUSED = rb"^\[rank 0\] libdsm: rank 0: refused a connection from 127\.0\.0\.1:\d+: "


@pytest.mark.parametrize("over", ["local", "ssh"])
def test_strangers_at_every_listener_do_not_stop_the_job(tmp_path, request, over):
    opts = request.getfixturevalue("sshd").options() if over == "ssh" else ()
    go2 = tmp_path / "go-mesh"
    job = HeldJob(tmp_path, 2, STARTUP_PROG, "--hold", "1:%s" % go2, opts=opts)
    with Strangers() as s:
        s.all_kinds(job.master)
        job.wait_err(MASTER_REFUSED, 3)            # dropped, not waited for
        job.go(0, 1)
        listeners, seen = job.listeners(2)
        for addr in listeners:                      # rank 0 builds the mesh, rank 1 waits
            s.all_kinds(addr)
        job.wait_err(RANK0_REFUSED, 3)
        go2.touch()
        status, out, err = job.finish()
    assert status == 0, err
    assert (seen.decode() + out).count("] ok") == 2
    assert "handshake: timed out after 2 s waiting for handshake hello" in err
    assert "handshake: bad magic b'GET '" in err


@pytest.mark.parametrize("phase", ["registration", "mesh"])
def test_ctrl_c_works_at_once_while_strangers_are_connected(tmp_path, phase):
    go2 = tmp_path / "go-mesh"
    job = HeldJob(tmp_path, 2, STARTUP_PROG, "--hold", "1:%s" % go2)
    with Strangers() as s:
        # Either way the job cannot end by itself (registration would fail it with
        # status 1; the mesh waits for an hour): 130 is Ctrl-C's own doing.
        if phase == "registration":         # rank 1 never starts: registration stays open
            s.all_kinds(job.master)
            job.go(0)
            job.wait_err(MASTER_REFUSED + rb"handshake: bad magic", 1)   # strangers served
        else:                               # rank 0 builds the mesh, rank 1 never joins it
            job.go(0, 1)
            listeners, _ = job.listeners(2)
            for addr in listeners:
                s.all_kinds(addr)
            job.wait_err(RANK0_REFUSED + rb"handshake: bad magic", 1)
        job.proc.send_signal(signal.SIGINT)
        status, _, err = job.finish()
    assert status == 130, err
    assert "dsmexec: got SIGINT, stopping the job" in err


def test_fuzzing_the_master_and_a_rank_listener_during_start_up(tmp_path):
    go2 = tmp_path / "go-mesh"
    job = HeldJob(tmp_path, 2, STARTUP_PROG, "--hold", "1:%s" % go2)
    seed, made = fuzz([job.master], 300)          # each one closed by the listener
    job.go(0, 1)
    listeners, seen = job.listeners(2)
    seed2, made2 = fuzz(listeners[:1], 300)
    go2.touch()
    status, out, err = job.finish()
    where = "seeds %d %d" % (seed, seed2)
    assert status == 0, (where, err[-3000:])
    assert (seen.decode() + out).count("] ok") == 2, where
    assert made + made2 == 600, where
    assert err.count("dsmexec: refused a connection") >= 250, where
    assert err.count("libdsm: rank 0: refused a connection") >= 250, where


def test_running_out_of_descriptors_while_strangers_connect_is_a_stall(tmp_path):
    """Rank 0, at ulimit -n 64, accepts 120 idle strangers while it waits for rank 1:
    accept() fails with EMFILE, the rank rests until the strangers' handshakes expire,
    and the job goes on (issue 21, point 11)."""
    go2 = tmp_path / "go-mesh"
    job = HeldJob(tmp_path, 2, STARTUP_PROG, "--hold", "1:%s" % go2, nofile=64)
    with Strangers() as s:
        job.go(0, 1)
        listeners, seen = job.listeners(2)
        for _ in range(120):
            s.idle(listeners[0])
        job.wait_err(rb"^\[rank 0\] libdsm: rank 0: out of file descriptors while accepting "
                     rb"\(Too many open files, \d+ handshakes under way\): waiting for some "
                     rb"to close$", 1)
        job.wait_err(RANK0_REFUSED + rb"handshake: timed out", 120)
        go2.touch()
        status, out, err = job.finish()
    assert status == 0, err
    assert (seen.decode() + out).count("] ok") == 2
