"""The rank bootstrap: what dsmexec runs on every host, before the user's program.

    python -u -m libdsm_services.rank --rank R --master HOST:PORT [--listen ADDR]
                                      [--module] PROG [ARGS...]

1. Print the READY marker on stdout, so the launcher knows ssh got through.
2. Read the job secret (hex) as one line on stdin: it never appears on a
   command line or in the environment.  ``--master ssh:PORT`` means "the
   address I was reached from over ssh" (the first field of $SSH_CLIENT).
3. Connect back to dsmexec, handshake, open a listening socket on ADDR
   (default 0.0.0.0; an all-local job says 127.0.0.1), REGISTER it and
   receive the connection TABLE.
4. With ``--supervise`` (ranks started over ssh): fork.  The child goes on
   as the rank, in a process group of its own; the parent waits for it,
   kills what it left in its group, tells dsmexec how it ended (EXITED:
   ssh itself would turn a death by signal into status 255) and exits with
   the same status.
5. Watch the dsmexec connection: when it closes, the rank kills the rest of
   its process group and exits at once, so nothing of it outlives its job
   on any host.  SIGUSR1, or a STACKS message on it, prints every thread's
   stack (services/stacks.py); ENDING (the job ends before this rank
   finished) runs the last words (rankreport.at_end): what libdsm writes for --trace/--stats.
   On it come the STDIN messages, dsmexec's stdin: rank 0's stdin becomes
   a pipe they are fed into (after the secret, so the secret stays off
   every command line and environment); the other ranks' stdin becomes
   /dev/null, as under mpirun.
6. Run PROG (or with --module, module PROG) as ``__main__``.  `libdsm.init()`
   finds the job in `CONTEXT`.  A program file that is not there (or is a
   directory, or a module not found) is reported once to dsmexec (FAILED),
   not as a traceback.  An uncaught exception prints the program's own
   frames only (none of runpy's or this module's), in one write, so the
   lines of several ranks' tracebacks do not interleave; status 1.

Stdlib only; never imports libdsm.
"""
import argparse
import base64
import faulthandler
import importlib.util
import os
import queue
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback

from libdsm_services import iomux, rankreport, stacks, wire

READY = "DSMEXEC-READY"
SECRET_TIMEOUT = 60.0
EXIT_LOST_LAUNCHER = 1
EXIT_NO_PROGRAM = 2
"""The program file is not there (as `python prog.py` says it)."""
TERM_GRACE = 2.0
"""Seconds a supervised rank gets between SIGTERM and SIGKILL once dsmexec is gone."""


class Context:
    """What a rank knows about its job once registration finished."""

    def __init__(self, rank, size, table, hostnames, secret, master, listener):
        self.rank, self.size = rank, size
        self.table = [tuple(t) for t in table]
        self.hostnames = hostnames
        self.secret = secret
        self.master = master            # connected socket to dsmexec
        self.listener = listener        # where peers connect to us
        self._send_lock = threading.Lock()

    def notify(self, type, body=None):
        """Tell dsmexec something (Message.INIT, FINALIZED).  A lost peer is told
        by the C core itself, on the same connection (services/rankreport.py)."""
        with self._send_lock:
            wire.Message(type, body).to_io(self.master)


CONTEXT = None
LAST_WORDS_GRACE = 2.0
"""Seconds the watch thread gives the last words before the rank exits anyway."""
PRINTING, PRINTED = threading.Event(), threading.Event()
"""Set when the program's uncaught exception is being printed, and once it is out."""
PRINT_GRACE = 1.0
"""Seconds the watch thread waits for that traceback before it ends the rank."""


def read_secret(stream, timeout=SECRET_TIMEOUT):
    """One hex line from stream (a file with fileno), within timeout seconds."""
    fd = stream.fileno()
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise wire.WireError("no job secret on stdin within %.0f s" % timeout)
        chunk = os.read(fd, 1)
        if not chunk:
            raise wire.WireError("stdin closed before the job secret arrived")
        line += chunk
    try:
        secret = bytes.fromhex(line.decode().strip())
    except ValueError:
        raise wire.WireError("the job secret on stdin is not hex") from None
    if len(secret) != wire.SECRET_BYTES:
        raise wire.WireError("expected a %d-byte secret, got %d" % (wire.SECRET_BYTES, len(secret)))
    return secret


def master_address(spec, environ):
    """Resolve --master; 'ssh:PORT' takes the host from $SSH_CLIENT."""
    host, port = wire.parse_hostport(spec)
    if host == "ssh":
        client = environ.get("SSH_CLIENT", "").split()
        if not client:
            raise wire.WireError("--master ssh:PORT needs $SSH_CLIENT, which is not set")
        host = client[0]
    return host, port


def register(rank, master_addr, secret, timeout, listen="0.0.0.0"):
    """Connect to dsmexec, handshake, register a listener on `listen`; return a Context."""
    master = wire.connect(master_addr[0], master_addr[1], timeout)
    wire.handshake(master, secret, wire.ROLE_CONNECT, rank)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((listen, 0))
    listener.listen(1024)       # a host leader: every rank of its host connects at once
    wire.Message(wire.Message.REGISTER, {
        "rank": rank, "host": master.getsockname()[0],
        "port": listener.getsockname()[1]}).to_io(master)
    master.settimeout(None)
    msg = wire.Message.from_io(master)
    if msg.type != wire.Message.TABLE or msg.body.get("rank") != rank:
        raise wire.WireError("expected the TABLE for rank %d, got %r" % (rank, msg))
    b = msg.body
    return Context(rank, b["size"], b["table"], b["hostnames"], secret, master, listener)


def kill_group_but_me(sig=signal.SIGKILL):
    """Send sig to every other process of our process group (what the rank started)."""
    me, group = os.getpid(), os.getpgrp()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if os.getpgid(int(entry)) == group:
                    os.kill(int(entry), sig)
            except OSError:
                pass            # gone meanwhile, or not ours to signal


def _watch(master, feed=None):
    """Exit the process, and what it started, when dsmexec's connection closes.

    Until then pass the STDIN messages on to `feed` (a queue.Queue of bytes),
    and turn STACKS into the stack dump (services/stacks.py).
    """
    try:
        while True:
            msg = wire.Message.from_io(master)
            if msg.type == wire.Message.STDIN and feed is not None:
                feed.put(base64.b64decode(msg.body.get("data", "")))
            elif msg.type == wire.Message.STACKS:
                stacks.request_self()
            elif msg.type == wire.Message.ENDING:
                rankreport.last_words(LAST_WORDS_GRACE)
                CONTEXT.notify(wire.Message.ENDED, {})
    except (OSError, ValueError, wire.WireError):
        pass
    if PRINTING.is_set():
        PRINTED.wait(PRINT_GRACE)   # let an uncaught exception's traceback out first
    try:
        os.write(2, b"dsm rank: lost the connection to dsmexec, exiting\n")
    except OSError:
        pass                    # stderr went with dsmexec: exit all the same
    kill_group_but_me()
    os._exit(EXIT_LOST_LAUNCHER)


def _feed_stdin(feed, fd):
    """Thread body: write what `feed` brings to fd, the pipe to our stdin; b"" closes it."""
    try:
        for data in iter(feed.get, b""):
            iomux.write_all(fd, data)
    except OSError:
        pass                    # the program closed its stdin: the rest is dropped
    os.close(fd)


def replace_stdin(rank):
    """After the secret: rank 0's stdin becomes a pipe fed from dsmexec's (returns the
    queue that feeds it), the others' /dev/null (returns None)."""
    if rank != 0:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        return None
    r, w = os.pipe()
    os.dup2(r, 0)
    os.close(r)
    feed = queue.Queue()
    threading.Thread(target=_feed_stdin, args=(feed, w), name="dsm-stdin", daemon=True).start()
    return feed


def supervise(ctx):
    """Fork; return in the child, the rank.  The parent never returns: see step 4 above."""
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        return
    try:
        os.setpgid(pid, pid)        # both sides set it: no window without the group
    except OSError:
        pass                        # the child did it, or already exited
    ctx.listener.close()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: _kill_group(pid, signum))
    code = os.waitstatus_to_exitcode(_wait(pid, ctx.master))
    _kill_group(pid, signal.SIGKILL)
    status, sig = (128 - code, -code) if code < 0 else (code, None)
    try:
        ctx.notify(wire.Message.EXITED, {"status": status, "signal": sig})
    except OSError:
        pass                        # dsmexec is gone or closed on us: nobody to tell
    os._exit(status)


def _wait(pid, master):
    """Wait for the rank; its wait status.

    Should dsmexec's connection close first and the rank not go by itself
    (stuck in C code, its watch thread cannot run), its group gets SIGTERM,
    then SIGKILL after TERM_GRACE s: the teardown of a rank over ssh.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return os.waitpid(pid, 0)[1]        # no pidfd here: the watch thread alone
    poll, kill_at = select.poll(), None
    poll.register(pidfd, select.POLLIN)
    poll.register(master, select.POLLRDHUP)     # its end, even behind STDIN data unread
    while True:
        wait = None if kill_at is None else max(0.0, kill_at - time.monotonic()) * 1000
        ready = dict(poll.poll(wait))
        if pidfd in ready:
            break
        if kill_at is not None and time.monotonic() >= kill_at:
            _kill_group(pid, signal.SIGKILL)
            kill_at = None                  # now only its end is left to wait for
        elif master.fileno() in ready:
            poll.unregister(master)
            _kill_group(pid, signal.SIGTERM)
            kill_at = time.monotonic() + TERM_GRACE
    os.close(pidfd)
    return os.waitpid(pid, 0)[1]


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def main(argv=None):
    global CONTEXT
    p = argparse.ArgumentParser(prog="libdsm_services.rank")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--master", required=True)
    p.add_argument("--timeout", type=float, default=SECRET_TIMEOUT)
    p.add_argument("--listen", default="0.0.0.0")
    p.add_argument("--supervise", action="store_true")
    p.add_argument("--module", action="store_true", help="prog is a module name (dsmexec -m)")
    p.add_argument("prog")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    stacks.register()       # before it registers: dsmexec may ask from then on
    sys.stdout.write("%s %d\n" % (READY, a.rank))
    sys.stdout.flush()
    try:
        secret = read_secret(sys.stdin, a.timeout)
        CONTEXT = register(a.rank, master_address(a.master, os.environ), secret, a.timeout,
                           a.listen)
    except (OSError, wire.WireError) as e:
        sys.stderr.write("dsm rank %d: cannot join the job: %s\n" % (a.rank, e))
        return EXIT_LOST_LAUNCHER
    problem = program_problem(a.prog, a.module)
    if problem:
        CONTEXT.notify(wire.Message.FAILED, {"reason": "%s in %s on %s" % (
            problem, os.getcwd(), socket.gethostname())})
        return EXIT_NO_PROGRAM
    if a.supervise:
        supervise(CONTEXT)
    feed = replace_stdin(a.rank)
    threading.Thread(target=_watch, args=(CONTEXT.master, feed), name="dsm-watch",
                     daemon=True).start()
    faulthandler.enable()
    sys.argv = [a.prog] + a.args
    sys.path[0] = os.getcwd() if a.module else os.path.dirname(os.path.abspath(a.prog))
    try:
        if a.module:
            runpy.run_module(a.prog, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(a.prog, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        print_traceback(e)
        return 1
    finally:
        rankreport.last_words()
    return 0


def program_problem(prog, module):
    """Why PROG (or module PROG) cannot run here, or None."""
    if module:
        try:
            found = importlib.util.find_spec(prog)
        except (ImportError, ValueError):
            found = None
        return None if found else "no module named %s" % prog
    if os.path.isdir(prog):
        return "%s is a directory, not a program" % prog
    return None if os.path.isfile(prog) else "%s: no such file" % prog


def print_traceback(e):
    """The traceback of an uncaught exception, without our frames, in one write to fd 2."""
    PRINTING.set()
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in ("runpy", __name__):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(e), e, tb))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass                # closed by the program: nothing to keep in order
    try:
        iomux.write_all(2, text.encode(errors="backslashreplace"))
    except OSError:
        pass
    finally:
        PRINTED.set()


if __name__ == "__main__":
    # Run main() in the module as imported by name, so that libdsm finds
    # CONTEXT in `services.rank` and not in `__main__`.
    from libdsm_services import rank as _named
    sys.exit(_named.main())
