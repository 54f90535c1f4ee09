"""The in-run reference every benchmark is compared with: a raw C 4 KiB
request/reply ping-pong between the same two rank processes.

Each process compiles the C with cffi into its own temporary directory."""
import importlib.util
import os
import shutil
import socket
import struct
import tempfile

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))


def _lib():
    ffi = cffi.FFI()
    ffi.cdef("int pingpong(int fd, int client, int iters, int req_bytes, "
             "int reply_bytes, uint64_t *out_ns);")
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
    from services import rank
    return rank.CONTEXT.table[0][0] if rank.CONTEXT else "127.0.0.1"


def pingpong(dsm, iters, req=16, reply=4096, offset=0):
    """Rank 0 serves, rank 1 measures.  They meet through the DSM itself:
    rank 0 puts its port at `offset` of the region.  Returns the round-trip
    times (ns) on rank 1, None elsewhere."""
    ffi, lib = _lib()
    result = None
    if dsm.rank == 0:
        ls = socket.socket()
        ls.bind(("0.0.0.0", 0))
        ls.listen(1)
        struct.pack_into("<q", dsm.mem, offset, ls.getsockname()[1])
    dsm.barrier()
    if dsm.rank == 1:
        port = struct.unpack_from("<q", dsm.mem, offset)[0]
        sock = socket.create_connection((_rank0_address(), port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = ffi.new("uint64_t[]", iters)
        if lib.pingpong(sock.fileno(), 1, iters, req, reply, out):
            raise OSError("ping-pong client failed")
        result = list(out)
        sock.close()
    elif dsm.rank == 0:
        sock, _ = ls.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if lib.pingpong(sock.fileno(), 0, iters, req, reply, ffi.NULL):
            raise OSError("ping-pong server failed")
        sock.close()
        ls.close()
    dsm.barrier()
    return result


def summary(ns_list):
    """(median_us, p99_us) of a list of nanosecond timings."""
    s = sorted(ns_list)
    return s[len(s) // 2] / 1000.0, s[min(len(s) - 1, int(len(s) * 0.99))] / 1000.0
