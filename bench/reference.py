"""The in-run references the benchmarks are compared with: raw C 4 KiB
request/reply ping-pongs and TCP streams between the same two rank
processes, blocking and busy-polling (see MODES); and the CPU the comm
threads spend meanwhile.

Each process compiles the C with cffi into its own temporary directory."""
import functools
import importlib.util
import json
import os
import shutil
import socket
import statistics
import struct
import tempfile
import time

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _lib():
    ffi = cffi.FFI()
    ffi.cdef("int pingpong(int fd, int client, int iters, int req_bytes, "
             "int reply_bytes, uint64_t *out_ns, int poll);"
             "uint64_t stream(int fd, int sender, uint64_t total, int chunk, int poll);")
    with open(os.path.join(HERE, "pingpong.c")) as f:
        ffi.set_source("_pingpong", f.read(), extra_compile_args=["-O2"])
    tmp = tempfile.mkdtemp(prefix="dsm-bench-")
    try:
        path = ffi.compile(tmpdir=tmp)
        spec = importlib.util.spec_from_file_location("_pingpong", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        shutil.rmtree(tmp)
    return mod.ffi, mod.lib


def _rank0_address():
    """Where rank 1 reaches rank 0 in the DSM's own mesh."""
    from libdsm_services import rank
    return rank.CONTEXT.table[0][0] if rank.CONTEXT else "127.0.0.1"


def _pair(dsm, offset):
    """A TCP connection between ranks 0 and 1 (None elsewhere), set up
    through the DSM itself: rank 0 puts its port at `offset`."""
    sock = None
    if dsm.rank == 0:
        ls = socket.socket()
        ls.bind(("0.0.0.0", 0))
        ls.listen(1)
        struct.pack_into("<q", dsm.mem, offset, ls.getsockname()[1])
    dsm.barrier()
    if dsm.rank == 1:
        port = struct.unpack_from("<q", dsm.mem, offset)[0]
        sock = socket.create_connection((_rank0_address(), port))
    elif dsm.rank == 0:
        sock, _ = ls.accept()
        ls.close()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


MODES = ("blocking", "busy-polling")
"""The two ways each raw C reference runs, both in the same run: blocking in
recv, or busy-polling it (MSG_DONTWAIT in a loop), which is the true limit
where a thread may spin.  The faster of the two is the reference."""


def _over_pair(dsm, offset, run):
    """run(fd) on ranks 0 and 1 over a fresh TCP connection between them:
    its result on rank 1, None elsewhere."""
    sock = _pair(dsm, offset)
    result = None
    if sock is not None:
        try:
            result = run(sock.fileno())
        finally:
            sock.close()
    dsm.barrier()
    return result if dsm.rank == 1 else None


def pingpongs(dsm, iters, req=16, reply=4096, offset=0, modes=MODES, rounds=2):
    """Raw C ping-pongs between ranks 0 and 1 on one connection, the modes
    taking turns for `rounds` rounds of iters // rounds round trips (so a
    noisy moment hits them alike): {mode: round-trip ns} on rank 1, None
    elsewhere."""
    ffi, lib = _lib()
    n = max(1, iters // rounds)

    def run(fd):
        out = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                buf = ffi.new("uint64_t[]", n) if dsm.rank == 1 else ffi.NULL
                if lib.pingpong(fd, dsm.rank == 1, n, req, reply, buf, mode == "busy-polling"):
                    raise OSError("%s ping-pong failed on rank %d" % (mode, dsm.rank))
                if dsm.rank == 1:
                    out[mode] += list(buf)
        return out
    return _over_pair(dsm, offset, run)


def pingpong(dsm, iters, req=16, reply=4096, offset=0):
    """The blocking raw C ping-pong alone: round-trip ns on rank 1, None
    elsewhere (the reference of the lock and scaling rows)."""
    out = pingpongs(dsm, iters, req, reply, offset, modes=("blocking",), rounds=1)
    return out and out["blocking"]


def tcp_bandwidths(dsm, nbytes, chunk=1 << 16, offset=0, modes=MODES):
    """Raw C streams of nbytes from rank 0 to rank 1 on one connection, one
    per mode of the reader: {mode: MB/s} on rank 1, None elsewhere."""
    ffi, lib = _lib()

    def run(fd):
        out = {}
        for mode in modes:
            ns = lib.stream(fd, dsm.rank == 0, nbytes, chunk, mode == "busy-polling")
            if not ns:
                raise OSError("%s stream failed on rank %d" % (mode, dsm.rank))
            out[mode] = nbytes / (ns / 1e9) / 1e6
        return out
    return _over_pair(dsm, offset, run)


def faster_pingpong(rtts):
    """{mode: round-trip ns} -> the ping-pong row's fields: each mode's
    median and p99 (µs) under "modes", and the faster one's at the top."""
    modes = {m: dict(zip(("median_us", "p99_us"), summary(t))) for m, t in rtts.items()}
    best = min(modes, key=lambda m: modes[m]["median_us"])
    return dict(modes[best], mode=best, modes=modes)


def faster_stream(mb_s):
    """{mode: MB/s} -> the stream row's fields: every mode's MB/s under
    "modes", and the faster one's at the top."""
    best = max(mb_s, key=mb_s.get)
    return {"mb_s": mb_s[best], "mode": best, "modes": dict(mb_s)}


def threads():
    """The ids of this process's threads now."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def init_counting(**kw):
    """libdsm.init(**kw) and the threads it started (the comm thread), for
    comm_cpu."""
    import libdsm
    before = threads()
    dsm = libdsm.init(**kw)
    return dsm, threads() - before


def cpu_ns(tids):
    """The CPU time (ns) threads tids of this process have used so far, read
    from Linux's per-thread CPU clock (the clock id pthread_getcpuclockid
    gives: ~tid << 3 | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED); a thread that
    is gone counts 0."""
    total = 0
    for tid in tids:
        try:
            total += time.clock_gettime_ns((~tid << 3) | 6)
        except OSError:
            pass
    return total


def comm_cpu(dsm, tids, run):
    """run() between two barriers, and the CPU (ns) the comm threads (tids,
    from init_counting) of ranks 0 and 1 used meanwhile: (run's result,
    [rank 0's ns, rank 1's ns]) on rank 1, (run's result, None) elsewhere."""
    dsm.barrier()
    start = cpu_ns(tids)
    out = run()
    dsm.barrier()
    used = dsm.gather(cpu_ns(tids) - start, root=1)
    return out, (used[:2] if used else None)


def warm_memory(nbytes):
    """Touch and give back nbytes of fresh memory.  On a VM whose host backs
    guest memory lazily (a balloon, DAMON reclaim), the first use of guest
    pages costs several times a page's zero-fill; a benchmark that backs
    new pages (the DSM's, unlike TCP's reused buffer) would time the host.
    Call it just before the timed part."""
    import mmap
    m = mmap.mmap(-1, nbytes)
    for off in range(0, nbytes, mmap.PAGESIZE):
        m[off] = 1
    m.close()


def emit(**fields):
    """One machine-readable result line for bench/run.py."""
    print("BENCH " + json.dumps(fields), flush=True)


def repeated(barrier, run, times=3):
    """Median seconds of `times` runs of run() (which returns its own
    seconds), each after barrier(): for the application rows, DSM and MPI."""
    out = []
    for _ in range(times):
        barrier()
        out.append(run())
    return statistics.median(out)


def summary(ns_list):
    """(median_us, p99_us) of a list of nanosecond timings."""
    s = sorted(ns_list)
    return s[len(s) // 2] / 1000.0, s[min(len(s) - 1, int(len(s) * 0.99))] / 1000.0
