"""The only module that touches the compiled cffi module (`libdsm._core`).

Every C return code is checked here and becomes a typed exception."""
import re

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
        what = _with_host(what)
        _tell_launcher_peer_lost(what)
    if rc == lib.DSM_ESYS:
        raise errors.SystemCallError(what, errno=lib.dsm_last_errno(), **_where)
    raise _ERRORS.get(rc, errors.DsmError)(what, **_where)


def _with_host(what):
    """'rank 1 sent nothing...' -> 'rank 1 on host h sent nothing...': the
    core knows ranks only by number."""
    m = re.match(r"rank (\d+) ", what)
    if not m or int(m.group(1)) >= len(_hosts):
        return what
    return "rank %s on host %s %s" % (m.group(1), _hosts[int(m.group(1))], what[m.end():])


def _tell_launcher_peer_lost(what):
    """Let dsmexec blame the rank that failed first, not this one."""
    from services import rank, wire
    if rank.CONTEXT is not None:
        try:
            rank.CONTEXT.notify(wire.Message.LOST_PEER, {"peer_error": what})
        except OSError:
            pass                # dsmexec is gone too; nothing to tell


def page_size():
    return int(lib.dsm_page_size())


def start(rank, nranks, base, size, block_pages, hold_us, nlocks, readahead, spin_us,
          master_fd, peer_fds, debug, host=None, heartbeat_s=0.0, hosts=None):
    """Map the region, install the handler, start the comm thread.
    hosts: every rank's host, to name them in errors."""
    _where.update(rank=rank, host=host)
    _hosts[:] = hosts or []
    cfg = ffi.new("struct dsm_config *", {
        "base": base, "size": size, "block_pages": block_pages, "hold_us": hold_us,
        "nlocks": nlocks, "readahead": readahead, "spin_us": spin_us, "rank": rank, "nranks": nranks, "master_fd": master_fd,
        "debug": int(debug), "heartbeat_ms": int(round(heartbeat_s * 1000))})
    fds = ffi.new("int[]", [-1 if fd is None else fd for fd in peer_fds])
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_start(cfg, fds, err), err)


def barrier():
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_barrier(err), err)


def finalize():
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_finalize(err), err)


def bcast(root, data):
    """Collective: root's bytes on every rank (root passes them, others None)."""
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    out, out_len = ffi.new("void **"), ffi.new("uint32_t *")
    src = ffi.from_buffer(data) if data is not None else ffi.NULL
    _check(lib.dsm_bcast(root, src, len(data) if data is not None else 0, out, out_len, err),
           err)
    if out[0] == ffi.NULL:
        return data
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


def lock_acquire(lock):
    err = ffi.new("char[]", lib.DSM_ERRLEN)
    _check(lib.dsm_lock_acquire(lock, err), err)


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


def page_home(page):
    return lib.dsm_page_home(page)


def stats():
    out = ffi.new("struct dsm_stats *")
    lib.dsm_get_stats(out)
    return {name: getattr(out, name) for name, _ in ffi.typeof("struct dsm_stats").fields}


def region_view(base, size):
    """A writable memoryview of size bytes at address base."""
    return memoryview(ffi.buffer(ffi.cast("char *", base), size))
