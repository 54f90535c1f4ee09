"""One dsmexec job: start the ranks, run the poll loop, decide the exit status, tear down.

The exit status is the status of the rank to blame (services/blame.py:
the rank another one reported lost, else the first that failed; its exit
code, or 128 + the signal that killed it), 1 for a failure dsmexec itself
detected (a rank that could not start or register, or that exited 0 after
init() without finalize()), 128 + N after dsmexec got signal N (130 for
SIGINT, 143 for SIGTERM, 129 for SIGHUP; also when it came while another
failure was being handled), EXIT_TIMEOUT (124) when --timeout ran out, and
0 when every rank exited 0.

dsmexec's stdin goes to rank 0 (over its connection, as STDIN messages,
once every rank registered; see services/rank.py); the other ranks read
/dev/null.

Whom to blame goes by what the ranks said, never by timing (services/blame.py).

The teardown, bounded, and the cleanup are services/stop.py's.
"""
import base64
import functools
import os
import signal
import time

from libdsm_services import blame, iomux, machinefile, procs, stacks, wire
from libdsm_services.master import Refused
from libdsm_services.start import (EXIT_LAUNCH, EXIT_TIMEOUT, REGISTER_SLACK, LaunchError,
                                   Options, Rank, Starting, check, local_hosts)
from libdsm_services.stop import Stopping

__all__ = ["Job", "Options", "Rank", "LaunchError", "EXIT_LAUNCH", "EXIT_TIMEOUT"]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the job with a clean teardown; the exit status is then 128 + N."""
DRAIN_GRACE = 1.0
"""Seconds to wait for a dead rank's output and connection to close."""
MAX_WAIT = 0.5


def readable_stdin(fd):
    """False for a terminal whose foreground is another process group (dsmexec runs
    in the background): a read would stop dsmexec with SIGTTIN."""
    try:
        return not os.isatty(fd) or os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True                 # not our terminal after all: reading tells


class Job(Starting, Stopping):
    """Run one job; `run()` returns dsmexec's exit status.

    Raises machinefile.MachineFileError from the constructor for a bad
    machine file, LaunchError for what cannot start.  ``out_fd``/``err_fd``
    receive the ranks' lines and dsmexec's own messages; ``in_fd`` is what
    rank 0 reads.
    """

    def __init__(self, opts, out_fd=1, err_fd=2, in_fd=0):
        self.opts = opts
        hosts = self._hosts()
        self.ranks = [Rank(i, h, self._is_local(h)) for i, h in enumerate(hosts)]
        check(opts, self.ranks)
        self.in_fd = in_fd
        self.deadline = None        # --timeout: when the job is stopped
        self.secret = wire.new_secret()
        self.out, self.err = iomux.Sink(out_fd), iomux.Sink(err_fd)
        self.loop = iomux.Loop()
        self.master = self.signals = None
        self.exit_code = None
        self.failure = None         # the first failure's message (for --restarts)
        self.signalled = False      # a stop signal came: its status is the job's
        self.teardown = None        # [(when, action)] once the teardown began
        self.stacks = None          # stacks.Wait while the ranks print their stacks
        self.evidence = blame.Evidence(len(self.ranks))
        self.culprit = None         # the rank an accusation named, judged when it ends
        self.lost_by = None         # (accuser, its text) of the culprit
        self.waits = True           # the teardown waits for ranks failing by themselves
        self.decided = False        # the exit status and its message are out
        self.register_deadline = None
        self.control_dir = None     # the private directory of the ssh control sockets
        self.janitor = None         # procs.Janitor of control_dir
        self.control_masters = []   # ssh.ControlMaster, one per shared connection

    def _hosts(self):
        """The rank hosts, in rank order (services/slurm.py takes them from the allocation)."""
        if self.opts.hosts is not None:
            return self.opts.hosts          # read and checked by services/cli.py
        if self.opts.machine_file is None:
            return local_hosts(self.opts.ntasks)
        return machinefile.parse(self.opts.machine_file, self.opts.ntasks)

    def _is_local(self, host):
        return not self.opts.ssh_all and host.user is None and machinefile.is_local(host.host)

    def log(self, message):
        """One line on dsmexec's stderr, in one write."""
        self.err.write(("dsmexec: %s\n" % message).encode(errors="replace"))

    # ------------------------------------------------------------ the run

    def run(self):
        """Start every rank, loop until each is judged, tear down; return the exit status."""
        with iomux.SignalWake() as self.signals:
            try:
                if self.opts.timeout is not None:
                    self.deadline = time.monotonic() + self.opts.timeout
                self._start()
                while not all(r.judged for r in self.ranks):
                    self.loop.run_once(self._wait_time())
                    self._step()
            finally:
                self._cleanup()
        return self.exit_code or 0

    # ------------------------------------------------------------ loop handlers

    def _on_output(self, rank, fd, revents):
        data = iomux.read_chunk(fd)
        if data:
            rank.streams[fd].write(data)
            if self.stacks is not None:
                self.stacks.output(rank.index, time.monotonic())
        else:
            self._end_stream(rank, fd)

    def _end_stream(self, rank, fd):
        rank.streams.pop(fd).close()
        self.loop.remove(fd)

    def _on_stdin(self, fd, revents):
        """dsmexec's stdin -> rank 0, a chunk per STDIN message; an empty one is the end."""
        try:
            data = iomux.read_chunk(fd) if fd is not None else b""
        except OSError:
            data = b""              # closed or unreadable: the end of the input
        conn = self.master.conns.get(0)
        try:
            if conn is not None:
                wire.Message(wire.Message.STDIN, {"data": base64.b64encode(data).decode()}
                             ).to_io(conn)
        except OSError:
            conn = None             # rank 0 is gone: nobody reads on
        if fd is not None and (not data or conn is None):
            self.loop.remove(fd)

    def _on_accept(self, fd, revents):
        try:
            conn = self.master.accept()
        except (Refused, OSError) as e:
            self.log(str(e))
            return
        if conn is not None:
            self.loop.add(conn, self._on_handshake)

    def _on_handshake(self, fd, revents):
        """A step of one registration; strangers are logged and dropped, once."""
        try:
            reg = self.master.advance(fd)
        except Refused as e:
            self.log(str(e))
            return
        if reg is None:
            return
        self.loop.remove(fd)
        self.loop.add(fd, functools.partial(self._on_message, self.ranks[reg.rank]))
        if self.master.complete:
            self.loop.remove(self.master.sock.fileno())
            self.master.stop_listening()
            self.master.send_tables([r.host.host for r in self.ranks])
            if readable_stdin(self.in_fd):
                self.loop.add(self.in_fd, self._on_stdin)
            else:
                self._on_stdin(None, 0)     # rank 0 gets an empty stdin

    def _on_message(self, rank, fd, revents):
        try:
            msg = self.master.receive(rank.index)
        except ConnectionResetError:
            msg = None              # it exited before reading all we sent (STDIN): a close
        except (wire.WireError, OSError) as e:
            self.log("%s: bad control message, closing its connection: %s" % (rank.label(), e))
            msg = None
        if msg is None:
            self._close_conn(rank.index)
        elif msg.type == wire.Message.INIT:
            rank.init = True
        elif msg.type == wire.Message.FINALIZED:
            rank.finalized = True
        elif msg.type == wire.Message.LOST_PEER:
            rank.lost_peer = True
            self.evidence.lost_peer(rank.index, msg.body)
        elif msg.type == wire.Message.EXITED:
            rank.reported = (msg.body.get("status"), msg.body.get("signal"))
        elif msg.type == wire.Message.ENDED:
            rank.said_last = True
        elif msg.type == wire.Message.FAILED:
            self._fail(EXIT_LAUNCH, "%s: %s" % (rank.label(), msg.body.get("reason")))
        else:
            self.log("%s: unexpected %r ignored" % (rank.label(), msg))

    def _resolve(self):
        """Once an accusation names the culprit (services/blame.py), it is to blame;
        one declared dead (silent) that still runs is killed."""
        if self.culprit is not None or self.teardown is not None:
            return
        named = self.evidence.culprit()
        if named is None:
            return
        culprit = self.culprit = self.ranks[named.peer]
        self.lost_by = (named.accuser, named.text)
        if named.how == "silent" and culprit.exited_at is None:
            self._fail(EXIT_LAUNCH, "%s declared dead by rank %d: %s; killed it"
                       % (culprit.label(), named.accuser, named.text))
            if culprit.proc:
                culprit.proc.signal_group(signal.SIGKILL)
        else:
            self._begin_teardown()      # its own status decides, once it ended (_judge)

    def _close_conn(self, index):
        conn = self.master.conns.get(index)
        if conn is not None:
            self.loop.remove(conn.fileno())
            self.master.close(index)

    def _on_signal(self, fd, revents):
        for sig in self.signals.drain():
            if sig in STOP_SIGNALS:
                self._interrupt(sig)

    def _interrupted(self):
        """For the ssh start: handle pending signals; True once the job is being stopped."""
        self._on_signal(self.signals.fd, 0)
        return self.teardown is not None or self.stacks is not None

    def _interrupt(self, sig):
        """A stop signal: stop the job, or kill it at once if it is being stopped already.

        The first signal decides the exit status (128 + N), even when it comes
        while another failure is being handled.
        """
        if not self.signalled:
            self.signalled, self.exit_code = True, 128 + sig
        name = signal.Signals(sig).name
        if self.teardown is not None or self.stacks is not None:
            self.log("got %s, killing the job now" % name)
            self._ask_stacks(lambda: self._begin_teardown() or self._advance_teardown(float("inf")))
            return
        self.log("got %s, stopping the job" % name)
        self._ask_stacks(self._begin_teardown)

    def _ask_stacks(self, then):
        """Ask every registered rank that still runs for its stacks; `then` runs once
        they are out (services/stacks.py), at once if none was asked."""
        asked = stacks.ask([r for r in self.ranks if r.index in self.master.registrations
                            and r.proc and r.exited_at is None], self.master)
        self.stacks = stacks.Wait(time.monotonic(), asked, then) if asked else None
        if not asked:
            then()

    # ------------------------------------------------------------ verdicts

    def _step(self):
        """After each poll: reap, judge drained ranks, check the deadline, tear down."""
        now = time.monotonic()
        for r in self.ranks:
            if r.proc and r.exited_at is None and r.proc.poll() is not None:
                r.exited_at = now
        self._resolve()
        for r in blame.judge_order(r for r in self.ranks
                                   if not r.judged and r.exited_at is not None):
            grace_over = now >= r.exited_at + DRAIN_GRACE
            waiting = r.lost_peer and self.teardown is None     # no culprit yet
            if not grace_over and (waiting or not self._drained(r)):
                break
            self._judge(r)
        for refused in self.master.expire(now):
            self.log(str(refused))
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self._fail(EXIT_TIMEOUT, "the job ran past --timeout %g s: stopping it, after "
                       "every rank's stack" % self.opts.timeout, waits=False, stacks_first=True)
        if self.stacks is not None and now >= self.stacks.deadline():
            then, self.stacks = self.stacks.then, None
            then()
        if self.teardown is None and not self.master.complete and now > self.register_deadline:
            late = ", ".join(self.ranks[i].label() for i in self.master.missing())
            self._fail(EXIT_LAUNCH, "%s did not register within %g s" % (
                late, self.opts.connect_timeout + REGISTER_SLACK), waits=False)
        self._advance_teardown(now)

    def _drained(self, rank):
        return not rank.streams and rank.index not in self.master.conns

    def _judge(self, rank):
        """A rank ended and its output is out: was it a failure?  The culprit an
        accusation named decides the exit status here, with its own."""
        for fd in list(rank.streams):
            self._end_stream(rank, fd)
        rank.judged = True
        status, culprit = rank.proc.status, rank is self.culprit
        if status != 0:
            what = procs.describe(status, blame.signal_of(rank))
        elif rank.init and not rank.finalized:
            status, what = EXIT_LAUNCH, "exited without calling finalize()"
        elif culprit:
            status, what = EXIT_LAUNCH, "ended while another rank needed it"
        else:
            return
        why = " (rank %d lost it: %s)" % self.lost_by if culprit else ""
        self._fail(status, "%s %s%s" % (rank.label(), what, why), culprit)

    def _fail(self, status, message, culprit=False, waits=True, stacks_first=False):
        """The first failure sets the exit status and starts the teardown (after the ranks'
        stacks with `stacks_first`); later ones are its echo.  `culprit`: the rank an
        accusation named, which ends after the teardown began and still decides.  `waits`:
        a rank failed, and the others will find out (not a timeout or a launch failure)."""
        first = self.teardown is None and self.stacks is None
        if first or (culprit and not self.decided):
            self.decided = True
            if self.exit_code is None:
                self.exit_code = status
            self.failure = self.failure or message
            self.log(message)
            self.waits = self.waits and waits
            if stacks_first and first:
                self._ask_stacks(self._begin_teardown)
                return
        self._begin_teardown()

    def _wait_time(self):
        """Seconds until the next deadline (teardown step, registration, drain), at most MAX_WAIT."""
        now = time.monotonic()
        times = [now + MAX_WAIT]
        if self.teardown:
            times.append(self.teardown[0][0])
        if self.deadline is not None:
            times.append(self.deadline)
        if self.stacks is not None:
            times.append(self.stacks.deadline())
        if not self.master.complete and self.teardown is None:
            times.append(self.register_deadline)
        if self.master.next_deadline() is not None:
            times.append(self.master.next_deadline())
        times += [r.exited_at + DRAIN_GRACE for r in self.ranks
                  if r.exited_at is not None and not r.judged]
        return max(0.0, min(times) - now)
