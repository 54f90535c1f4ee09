"""Shared fixtures for the launcher tests: a private sshd, dsmexec runs, leftover checks."""
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid

import pytest

import netns              # tests/netns.py: several hosts on one machine
import slurmd             # tests/slurmd.py: a private single-node Slurm
import sshd as private   # tests/sshd.py: the private sshd itself

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DSMEXEC = os.path.join(REPO, "dsmexec.py")
HELPER = os.path.join(REPO, "tests", "helper_prog.py")


# ---------------------------------------------------------------- dsmexec runs

def run_dsmexec(*argv, timeout=None, **kwargs):
    """Run dsmexec.py with argv; return the CompletedProcess (text, both streams captured).

    Its stdin (rank 0's) is /dev/null unless `input` is given.  The test's own timeout
    bounds the run (subprocess.run kills dsmexec when it fires), unless `timeout` is given."""
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, DSMEXEC, *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=kwargs.pop("cwd", REPO), **kwargs)


def machine_file(tmp_path, *lines, name="machines"):
    """Write a machine file with these lines; return its path as a str."""
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def pids_with(marker, where="cmdline"):
    """Pids of the processes (not this one) whose /proc/PID/<where> (cmdline,
    or environ) contains marker."""
    found, me = [], os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/%s" % (entry, where), "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass                # it ended while we looked
    return found


def wait_gone(marker, timeout=None, where="cmdline"):
    """Wait until no process carries marker; return the pids still there (none, unless a
    `timeout` in seconds ran out first).  Without one the test's own timeout is the bound:
    the property is that they end, not how fast on a loaded machine."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while pids_with(marker, where) and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.05)
    return pids_with(marker, where)


def wait_for_lines(proc, count, word, timeout=None, stream=None):
    """Read proc's stdout (or `stream`) until count lines contain word; return what was read.
    Without a `timeout` (seconds) the test's own timeout bounds the wait."""
    seen, stream = b"", stream or proc.stdout
    deadline = None if timeout is None else time.monotonic() + timeout
    while seen.count(word.encode()) < count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and (left <= 0 or not select.select([stream], [], [], left)[0]):
            proc.kill()
            pytest.fail("no %d %r in %g s: %r" % (count, word, timeout, seen))
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            pytest.fail("dsmexec ended early: %r %r" % (seen, proc.stderr.read()))
        seen += chunk
    return seen


def kill_all(pids):
    """SIGKILL each pid that is still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def tag():
    """A unique marker for helper_prog's --tag; afterwards no process may still carry it."""
    marker = "dsmtest-" + uuid.uuid4().hex
    yield marker
    try:
        wait_gone(marker)           # a process that outlives the job: the test times out
    finally:
        kill_all(pids_with(marker))     # do not let one failure leak into the next tests


# ---------------------------------------------------------------- a private sshd

@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1 (tests/sshd.py); skipped without /usr/sbin/sshd,
    except under CI=true."""
    why = private.missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip("%s is not installed" % private.SSHD)
    with contextlib.ExitStack() as stack:
        try:
            running = stack.enter_context(private.private_sshd(tmp_path_factory.mktemp("sshd")))
        except private.SshdError as e:
            pytest.fail(str(e))
        yield running


# ---------------------------------------------------------------- several hosts

def _unavailable(why):
    """Skip for a missing facility, except under CI=true where it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def _enter(stack, context):
    """Start a test service (enter its context on stack): namespaces that cannot be made
    skip (fail under CI), a daemon that does not start fails."""
    try:
        return stack.enter_context(context)
    except netns.NetnsError as e:
        _unavailable("cannot make network namespaces: %s" % e)
    except slurmd.SlurmError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def virtual_cluster(tmp_path_factory):
    """Three hosts, network namespaces with an sshd each (tests/netns.py)."""
    why = netns.missing()
    if why:
        _unavailable(why)
    with contextlib.ExitStack() as stack:
        yield _enter(stack, netns.virtual_hosts(3, tmp_path_factory.mktemp("hosts")))


@pytest.fixture
def hosts(virtual_cluster):
    """The three hosts; afterwards no rank and no ssh session may be left on any of them."""
    yield virtual_cluster
    try:
        virtual_cluster.wait_clean()    # what is left running fails the test by its timeout
    finally:
        virtual_cluster.kill_leftovers()


# ---------------------------------------------------------------- Slurm

@pytest.fixture(scope="session")
def slurm():
    """A private single-node Slurm (tests/slurmd.py); skipped without slurm-wlm and
    munge, except under CI=true."""
    why = slurmd.missing()
    if why:
        _unavailable(why)
    with contextlib.ExitStack() as stack:
        yield _enter(stack, slurmd.private_slurm())


@pytest.fixture(scope="session")
def slurm_nodes(tmp_path_factory):
    """A private Slurm of two nodes, each a network namespace with its own slurmd."""
    why = slurmd.missing() or netns.missing()
    if why:
        _unavailable(why)
    with contextlib.ExitStack() as stack:
        cluster = _enter(stack, netns.virtual_hosts(2, tmp_path_factory.mktemp("slurm-hosts")))
        yield _enter(stack, slurmd.private_slurm(cpus=4, hosts=cluster))
