"""The in-run reference every benchmark is compared with: a raw C 4 KiB
request/reply ping-pong between the same two rank processes.

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

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _lib():
    ffi = cffi.FFI()
    ffi.cdef("int pingpong(int fd, int client, int iters, int req_bytes, "
             "int reply_bytes, uint64_t *out_ns);"
             "uint64_t stream(int fd, int sender, uint64_t total, int chunk);")
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


def pingpong(dsm, iters, req=16, reply=4096, offset=0):
    """Raw C ping-pong between ranks 0 and 1: the round-trip times (ns) on
    rank 1, None elsewhere."""
    ffi, lib = _lib()
    sock = _pair(dsm, offset)
    result = None
    if sock is not None:
        out = ffi.new("uint64_t[]", iters) if dsm.rank == 1 else ffi.NULL
        if lib.pingpong(sock.fileno(), dsm.rank == 1, iters, req, reply, out):
            raise OSError("ping-pong failed on rank %d" % dsm.rank)
        result = list(out) if dsm.rank == 1 else None
        sock.close()
    dsm.barrier()
    return result


def tcp_bandwidth(dsm, nbytes, chunk=1 << 16, offset=0):
    """Raw C stream of nbytes from rank 0 to rank 1: MB/s on rank 1."""
    ffi, lib = _lib()
    sock = _pair(dsm, offset)
    result = None
    if sock is not None:
        ns = lib.stream(sock.fileno(), dsm.rank == 0, nbytes, chunk)
        if not ns:
            raise OSError("stream failed on rank %d" % dsm.rank)
        result = nbytes / (ns / 1e9) / 1e6 if dsm.rank == 1 else None
        sock.close()
    dsm.barrier()
    return result


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
