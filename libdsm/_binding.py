"""The only module that touches the compiled cffi module (`libdsm._core`).

Every C return code is checked here and becomes a typed exception."""
import threading

from libdsm import errors
from libdsm._version import __version__

try:
    from libdsm._core import ffi, lib
except ImportError as e:  # pragma: no cover - depends on the build
    raise errors.CoreVersionError(
        "the C core is not built (%s); run `make build` or `pip install -e .`" % e) from None

_ERRORS = {
    lib.DSM_EINVAL: errors.ConfigError,
    lib.DSM_EADDR: errors.AddressInUseError,
    lib.DSM_ELIMIT: errors.MappingLimitError,
    lib.DSM_EPEER: errors.PeerError,
    lib.DSM_ESYS: errors.SystemCallError,
    lib.DSM_ESTATE: errors.StateError,
    lib.DSM_ECOLL: errors.CollectiveError,
    lib.DSM_ENOTHELD: errors.LockError,
    lib.DSM_ETIMEDOUT: errors.PinTimeoutError,
}
PROT_NAMES = {lib.DSM_PROT_NONE: "none", lib.DSM_PROT_READ: "read", lib.DSM_PROT_RW: "rw"}
_where = {"rank": None, "host": None}
_hosts = []                 # every rank's host, to name them in errors


def core_version():
    major, minor = ffi.new("int *"), ffi.new("int *")
    lib.dsm_core_version(major, minor)
    return major[0], minor[0]


def build_version():
    """The libdsm version the compiled core was built for."""
    return ffi.string(lib.dsm_build_version()).decode()


def check_core_version(built=None):
    """Refuse a compiled core stamped with another libdsm version: it is a
    stale build, whose C may not match this Python."""
    built = build_version() if built is None else built
    if built != __version__:
        raise errors.CoreVersionError(
            "the compiled C core was built for libdsm %s but this is libdsm %s; "
            "rebuild it with `make build`" % (built, __version__))


def _check(rc, err):
    if rc == lib.DSM_OK:
        return
    what = ffi.string(err).decode(errors="replace")
    if rc == lib.DSM_EPEER:
        peer = failed_peer()
        raise errors.PeerError(_with_host(what, peer), peer=peer, **_where)
    if rc == lib.DSM_ESYS:
        raise errors.SystemCallError(what, errno=lib.dsm_last_errno(), **_where)
    raise _ERRORS.get(rc, errors.DsmError)(what, **_where)


def failed_peer():
    """The rank whose loss failed the job (the core's record), or None: not
    failed, or no one rank to blame."""
    peer = lib.dsm_failed_peer()
    return None if peer < 0 else peer


def _with_host(what, peer):
    """'rank 1 sent nothing...' -> 'rank 1 on host h sent nothing...': the
    core knows ranks only by number.  The lost rank (`peer`) tells which;
    dsmexec learnt it from the core itself (the LOST_PEER message, peer.h)."""
    lead = "rank %d " % peer if peer is not None else None
    if lead is None or peer >= len(_hosts) or not what.startswith(lead):
        return what
    return "rank %d on host %s %s" % (peer, _hosts[peer], what[len(lead):])


def page_size():
    return int(lib.dsm_page_size())


CONSISTENCY = {"sequential": lib.DSM_SEQUENTIAL, "release": lib.DSM_RELEASE}


def start(rank, nranks, base, size, block_pages, hold_us, nlocks, readahead, spin_us,
          master_fd, peer_fds, debug, host=None, consistency="sequential", twin_limit_mb=64,
          heartbeat_s=0.0, hosts=None, wait="yield", leaders=None):
    """Map the region, install the handler, start the comm thread.
    leaders: every rank's host leader (libdsm/mesh.py; None: every rank its
    own), peer_fds the connections to the direct peers; hosts: every rank's host, to name them
    in errors; wait: "reply" or "yield" (config.WAITS)."""
    _where.update(rank=rank, host=host)
    _hosts[:] = hosts or []
    cfg = ffi.new("struct dsm_config *", {
        "base": base, "size": size, "block_pages": block_pages, "hold_us": hold_us,
        "nlocks": nlocks, "readahead": readahead, "spin_us": spin_us, "rank": rank,
        "nranks": nranks, "master_fd": master_fd, "debug": int(debug),
        "consistency": CONSISTENCY[consistency], "twin_limit_mb": twin_limit_mb,
        "heartbeat_ms": int(round(heartbeat_s * 1000)), "wait_reply": int(wait == "reply")})
    fds = ffi.new("int[]", [-1 if fd is None else fd for fd in peer_fds])
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    heads = ffi.new("int[]", leaders) if leaders else ffi.NULL
    _check(lib.dsm_start(cfg, fds, heads, err), err)


def agree(value, nranks):
    """Collective right after start(): every rank's integer value, by rank."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    out = ffi.new("uint64_t[]", nranks)
    _check(lib.dsm_agree(value, out, err), err)
    return list(out)


def barrier():
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_barrier(err), err)


def finalize():
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_finalize(err), err)


COLLECTIVES = {"bcast": lib.DSM_COLL_BCAST, "reduce": lib.DSM_COLL_REDUCE,
               "gather": lib.DSM_COLL_GATHER}
OPS = {"sum": lib.DSM_OP_SUM, "prod": lib.DSM_OP_PROD, "min": lib.DSM_OP_MIN,
       "max": lib.DSM_OP_MAX}
DTYPES = {"float64": lib.DSM_DT_F64, "float32": lib.DSM_DT_F32, "int64": lib.DSM_DT_I64,
          "int32": lib.DSM_DT_I32, "int16": lib.DSM_DT_I16, "int8": lib.DSM_DT_I8,
          "uint64": lib.DSM_DT_U64, "uint32": lib.DSM_DT_U32, "uint16": lib.DSM_DT_U16,
          "uint8": lib.DSM_DT_U8}
ROOT_ALL = lib.DSM_ROOT_ALL


def collective(kind, root, data=None, op=None, dtype=None, sig=0, host=False):
    """Collective `kind` (a key of COLLECTIVES) with this rank's bytes (a
    buffer, or None): the bytes this rank gets back, or None.  op and dtype
    are keys of OPS and DTYPES (reduce); sig identifies the arguments' shape.
    host: through the host's shared memory (a job on one host, share=host)."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    out, out_len = ffi.new("void **"), ffi.new("uint64_t *")
    src = ffi.from_buffer(data) if data is not None else ffi.NULL
    nbytes = len(src) if data is not None else 0
    run = lib.dsm_host_collective if host else lib.dsm_collective
    _check(run(COLLECTIVES[kind], root, OPS[op] if op else 0, DTYPES[dtype] if dtype else 0,
               sig, src, nbytes, out, out_len, err), err)
    if out[0] == ffi.NULL:
        return None
    try:
        return ffi.buffer(out[0], out_len[0])[:]
    finally:
        lib.dsm_buffer_free(out[0])


def prefetch(first_page, npages, write):
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_prefetch(first_page, npages, int(write), err), err)


def pin(first_page, npages, write, timeout_s):
    """Fetch and pin pages; PinTimeoutError past timeout_s (None: no limit)."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    ms = 0xFFFFFFFF if timeout_s is None else min(0xFFFFFFFF, max(1, int(timeout_s * 1000)))
    _check(lib.dsm_pin(first_page, npages, int(write), ms, err), err)


def unpin(first_page, npages):
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_unpin(first_page, npages, err), err)


def lock_release(lock):
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_lock_release(lock, err), err)


def ensure_handler():
    """Reinstall the SIGSEGV handler if it was displaced; True if it was."""
    return lib.dsm_handler_ensure() == 1


def page_prot(page):
    return PROT_NAMES.get(lib.dsm_page_prot(page))


def pages_given_up(first, n):
    """Per page of [first, first + n): how often this rank gave it up."""
    out = ffi.new("uint32_t[]", n)
    if lib.dsm_pages_given_up(first, n, out) != lib.DSM_OK:
        raise errors.StateError("pages %d..%d are not in the region" % (first, first + n),
                                **_where)
    return ffi.unpack(out, n)


def describe_waits(size=4096):
    """What each thread waiting in the core waits for, a line each."""
    buf = ffi.new("char[]", size)
    lib.dsm_describe_waits(buf, size)
    return ffi.string(buf).decode()


def page_home(page):
    return lib.dsm_page_home(page)


def place(first_page, npages, homes):
    """Collective: homes[i] becomes the home of page first_page + i."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_place(first_page, npages, ffi.new("uint16_t[]", homes or [0]), err), err)


def stats():
    out = ffi.new("struct dsm_stats *")
    lib.dsm_get_stats(out)
    return {name: getattr(out, name) for name, _ in ffi.typeof("struct dsm_stats").fields}


def region_view(base, size):
    """A writable memoryview of size bytes at address base."""
    return memoryview(ffi.buffer(ffi.cast("char *", base), size))


EVENT_KINDS = {lib.DSM_EV_FAULT: "fault", lib.DSM_EV_SERVE: "serve", lib.DSM_EV_SYNC: "sync",
               lib.DSM_EV_LOCK: "lock"}
SYNC_NAMES = {lib.DSM_COLL_BARRIER: "barrier", **{v: k for k, v in COLLECTIVES.items()}}
"""A sync event's arg, a DSM_COLL_* number, by name (services/rankreport.py)."""


def trace_start(capacity):
    """Record trace events from now on, up to capacity of them."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_trace_start(capacity, err), err)


def trace_events():
    """(events, dropped): the events recorded, as (kind name, start_ns
    (CLOCK_MONOTONIC), dur_ns, arg, peer, write) tuples (a sync event's arg
    is the collective's name), and how many did not fit in the buffer."""
    dropped = ffi.new("uint64_t *")
    n = lib.dsm_trace_count(dropped)
    buf = ffi.new("struct dsm_event[]", max(1, n))
    n = lib.dsm_trace_read(buf, n)
    return [(EVENT_KINDS.get(e.kind, "?"), e.start_ns, e.dur_ns,
             SYNC_NAMES.get(e.arg, "collective") if e.kind == lib.DSM_EV_SYNC else e.arg,
             e.peer, e.write) for e in (buf[i] for i in range(n))], dropped[0]


FOREVER_MS = 0xFFFFFFFF             # a timeout_ms meaning no limit


def timeout_ms(timeout_s):
    """A timeout in seconds as the C core's milliseconds: None is no limit,
    0 is "now only", anything above 0 at least 1 ms."""
    if timeout_s is None:
        return FOREVER_MS
    if timeout_s <= 0:
        return 0
    return min(FOREVER_MS - 1, max(1, int(round(timeout_s * 1000))))


def _in_time(rc, err):
    """True for DSM_OK, False for DSM_ETIMEDOUT; other errors raise."""
    if rc == lib.DSM_ETIMEDOUT:
        return False
    _check(rc, err)
    return True


def lock_acquire_within(lock, timeout_s):
    """Acquire lock within timeout_s (0: only if free now, None: no limit):
    True, or False when it stayed held elsewhere."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    return _in_time(lib.dsm_lock_acquire_within(lock, timeout_ms(timeout_s), err), err)


def lock_held(lock):
    """Does this rank hold the lock?"""
    return lib.dsm_lock_held(lock) == 1


def post(rank, key):
    """One wake-up for key (uint64) to rank's mailbox."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_post(rank, key, err), err)


def take(key, timeout_s):
    """Take one wake-up for key from this rank's mailbox, waiting at most
    timeout_s (None: no limit): True, or False if none came in time."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    return _in_time(lib.dsm_take(key, timeout_ms(timeout_s), err), err)


OPS.update(land=lib.DSM_OP_LAND, lor=lib.DSM_OP_LOR, lxor=lib.DSM_OP_LXOR,
           band=lib.DSM_OP_BAND, bor=lib.DSM_OP_BOR, bxor=lib.DSM_OP_BXOR)


def region_fd():
    """The region's memfd (libdsm.checkpoint finds the pages with data by
    lseek SEEK_DATA/SEEK_HOLE on it); StateError when not running."""
    fd = lib.dsm_region_fd()
    if fd < 0:
        raise errors.StateError("the region is not mapped: no memfd", **_where)
    return fd


EVENT_KINDS.update({lib.DSM_EV_CHECKPOINT: "checkpoint", lib.DSM_EV_RESTORE: "restore"})


def trace_checkpoint(restore, generation, nbytes, start_ns, dur_ns):
    """A checkpoint (or, with restore, a restore) as a trace event, when tracing."""
    shift = lib.DSM_EV_GEN_SHIFT
    arg = (generation % (1 << (64 - shift))) << shift | nbytes % (1 << shift)
    lib.dsm_trace_note(lib.DSM_EV_RESTORE if restore else lib.DSM_EV_CHECKPOINT, arg,
                       start_ns, dur_ns)


def page_prots(first, n):
    """Each page of [first, first + n)'s protection here, as bytes of
    lib.DSM_PROT_* values (PROT_NAMES names them)."""
    out, err = ffi.new("uint8_t[]", n), ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_page_prots(first, n, out, err), err)
    return ffi.buffer(out, n)[:]


# ------------------------------------------------------------ host-shared memory

def host_attach(memfd, nlocal, index, nhosts):
    """Before start(): the region maps the host's shared memfd (hostshare.py),
    which the core owns from here on; this rank is index of nlocal on its host,
    one of the job's nhosts hosts."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_host_attach(memfd, nlocal, index, nhosts, err), err)


def host_state_bytes(nbytes):
    """The bytes of the host's page states after the control area (dsm_api.h)."""
    return lib.dsm_host_state_bytes(nbytes)


_host_err = threading.local()


def host_barrier():
    """The barrier of the host's ranks, through their shared memory.  Its
    error buffer is made once per thread: programs call it in tight loops,
    where ffi.new would be a fair part of the time."""
    err = getattr(_host_err, "buf", None)
    if err is None:
        err = _host_err.buf = ffi.new("char[]", lib.DSM_ERRLEN)
    rc = lib.dsm_host_barrier(err)
    if rc:
        _check(rc, err)


HOST_LOCKS = lib.DSM_HOST_LOCKS
"""Locks numbered below this go through the host's shared memory (share=host)."""


def host_lock_acquire_within(lock, timeout_s):
    """lock_acquire_within, through the host's shared memory."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    return _in_time(lib.dsm_host_lock_acquire(lock, timeout_ms(timeout_s), err), err)


def host_finalizing():
    """Before finalize() in host-shared mode: the host collectives this rank
    will not join fail instead of waiting for it."""
    lib.dsm_host_finalizing()


def host_lock_release(lock):
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_host_lock_release(lock, err), err)


def host_lock_held(lock):
    return lib.dsm_host_lock_held(lock) == 1


def host_post(rank, key):
    """post, through the host's shared memory (a job on one host)."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_host_post(rank, key, err), err)


def host_take(key, timeout_s):
    """take, through the host's shared memory (a job on one host)."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    return _in_time(lib.dsm_host_take(key, timeout_ms(timeout_s), err), err)
