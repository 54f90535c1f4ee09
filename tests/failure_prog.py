"""A rank program that fails one rank in a chosen way, for the tests that
check whom dsmexec blames (tests/test_blame.py).

    failure_prog.py SCENARIO --rank R [--rounds N]

Every rank prints ``ready`` once the job runs; then rank R fails and the
others go on inside libdsm, where they find the loss themselves:

  kill    R kills itself with SIGKILL; the others loop on barriers
  stop    R stops itself with SIGSTOP; the others write pages R is home
          of, each a page fault that R never answers (the heartbeat's case)
  reset   on 3 ranks, R = 2, the others' 4 KiB allreduce; arranged so that
          rank 0's comm thread, inside the allreduce, sends to rank 2 just
          after rank 2's reset came (issue 19's deadlock): rank 1 stops
          rank 0 once it waits in the allreduce, rank 2 (seeing it stopped)
          sends its part and exits 3 with its connection to rank 0 set to
          reset (SO_LINGER 0), and rank 1 lets rank 0 go on once rank 2 is
          gone and rank 0's kernel took the reset
  wait    R loops on barriers (the others' link to it is cut by the test)

The loops run --rounds times at most; a rank that ends them prints
``survived`` (a test that sees it has found a failure nobody noticed).
A rank that gets a PeerError prints its fields: ``PeerError peer=P rank=R``.
"""
import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time

import numpy as np

import libdsm


def socket_to(ctx, peer):
    """A socket object on (a dup of) this rank's connection to a lower rank:
    the one whose far end is that rank's listener (higher ranks connect)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink("/proc/self/fd/%d" % fd)
        except FileNotFoundError:
            continue            # the listing's own fd, closed since
        if fd == ctx.master.fileno() or not target.startswith("socket:"):
            continue
        s = socket.socket(fileno=os.dup(fd))
        try:
            if s.getpeername()[1] == ctx.table[peer][1]:
                return s
        except OSError:
            pass                # not a connected socket
        s.close()
    raise RuntimeError("no connection to rank %d" % peer)


def bytes_acked(s):
    """struct tcp_info's tcpi_bytes_acked: what the peer's kernel took, even
    from a stopped process."""
    return struct.unpack_from("Q", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232),
                              120)[0]


def until(cond):
    """Wait for a condition on another process that no call can wait for."""
    while not cond():
        time.sleep(0.001)


def proc_state(pid, tid=None):
    """(state letter, wchan) of a process or thread; ("gone", "") once reaped."""
    path = "/proc/%d/task/%d/" % (pid, tid or pid)
    try:
        with open(path + "stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(path + "wchan") as f:
            return state, f.read()
    except FileNotFoundError:
        return "gone", ""


def connected(local_port, remote_port):
    """Whether the kernel still has a TCP connection between these ports (one that
    a reset closed is gone from /proc/net/tcp)."""
    ends = ":%04X" % local_port, ":%04X" % remote_port
    with open("/proc/net/tcp") as f:
        return any(line.split()[1].endswith(ends[0]) and line.split()[2].endswith(ends[1])
                   for line in list(f)[1:])


def sent_to_rank0(ctx, started):
    """Wait until the 4 KiB this rank is about to send rank 0 reached its kernel."""
    s = socket_to(ctx, 0)
    base = bytes_acked(s)
    started.set()
    until(lambda: bytes_acked(s) >= base + 4096)
    return s


def rank1_conductor(ctx, pids, ports, flag, started):
    """Rank 1's side thread: see the module docstring (reset)."""
    sent_to_rank0(ctx, started)
    until(lambda: os.path.exists(flag) and proc_state(pids[0])[0] == "S"
          and proc_state(pids[0])[1].startswith("futex"))
    os.kill(pids[0], signal.SIGSTOP)
    until(lambda: proc_state(pids[2])[0] in ("Z", "gone"))
    until(lambda: not connected(ctx.table[0][1], ports[2]))    # rank 0's kernel took the reset
    os.kill(pids[0], signal.SIGCONT)


def rank2_reset(ctx, started):
    """Rank 2's side thread: once its part reached rank 0, exit 3, resetting."""
    s = sent_to_rank0(ctx, started)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    os._exit(3)


def reset(dsm, a):
    """The reset scenario (module docstring); every rank's part."""
    from libdsm_services import rank
    ctx = rank.CONTEXT
    pids = dsm.allgather(os.getpid())
    if dsm.rank:
        with socket_to(ctx, 0) as s:
            port = s.getsockname()[1]
    ports = dsm.allgather(port if dsm.rank else None)
    flag = os.path.join(a.dir, "rank0-in-allreduce")
    x = np.full(512, dsm.rank, dtype="float64")       # 4 KiB
    started = threading.Event()
    if dsm.rank == 0:
        open(flag, "w").close()
    elif dsm.rank == 1:
        side = threading.Thread(target=rank1_conductor, args=(ctx, pids, ports, flag, started))
    else:
        until(lambda: proc_state(pids[0])[0] == "T")
        side = threading.Thread(target=rank2_reset, args=(ctx, started), daemon=True)
    if dsm.rank:
        side.start()
        started.wait()
    try:
        dsm.allreduce(x)
    finally:
        if dsm.rank == 1:
            side.join()         # rank 0 is let go on whatever happens here


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=("kill", "stop", "reset", "wait"))
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--rounds", type=int, default=100000)
    p.add_argument("--dir", help="reset: a directory for rank 0's flag file")
    a = p.parse_args()
    dsm = libdsm.init()
    pages = dsm.nbytes // dsm.page_size
    dsm.barrier()
    print("ready pid=%d" % os.getpid(), flush=True)
    dsm.barrier()
    me = dsm.rank == a.rank
    if a.scenario == "kill" and me:
        os.kill(os.getpid(), signal.SIGKILL)
    if a.scenario == "stop" and me:
        os.kill(os.getpid(), signal.SIGSTOP)
    try:
        if a.scenario == "stop":
            theirs = [pg for pg in range(pages) if dsm.page_home(pg) == a.rank]
            for i in range(a.rounds):
                dsm.mem[theirs[i % len(theirs)] * dsm.page_size] = i & 0xFF
        elif a.scenario == "reset":
            reset(dsm, a)
        else:
            for _ in range(a.rounds):
                dsm.barrier()
    except libdsm.PeerError as e:
        print("PeerError peer=%s rank=%s" % (e.peer, e.rank), flush=True)
        raise
    print("survived", flush=True)
    dsm.finalize()


if __name__ == "__main__":
    sys.exit(main())
