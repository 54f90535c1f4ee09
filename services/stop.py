"""How a dsmexec job ends: the teardown schedule, and the cleanup that runs whatever happened.

`Stopping` is the teardown half of services/job.py's Job, as services/start.py's
`Starting` is its start-up half.  It uses the Job's loop, master connections,
ranks and options, and `self.teardown`: None until the teardown began, then the
steps still to run, [(when, action)] in time order.

Teardown is bounded: ranks still inside libdsm get FAILING_GRACE s to end
by themselves with their own error; then the master connections close
(every rank exits by itself when its connection closes), after CLOSE_GRACE
s SIGTERM to each rank's process group, after TERM_GRACE s more SIGKILL;
then reap.  The ssh control masters (ranks on one host share a connection)
are stopped after the ranks, and their private directory is removed (by a
`procs.Janitor` if dsmexec itself is killed).
"""
import functools
import shutil
import signal
import time

from libdsm_services import procs, wire

CLOSE_GRACE = 2.0
"""Seconds ranks get to exit by themselves once their connections closed."""
FAILING_GRACE = 4.0
"""Seconds the ranks inside libdsm get, after a failure, to end by themselves with their
own error (a PeerError naming the lost rank) before their connections close; twice the
core's self-fencing (FENCE_NS, comm.c), so a rank stuck in C ends itself and says why.
It serves their output, not blame; the teardown goes on as soon as they all ended."""


class Stopping:
    """The teardown methods of a Job."""

    def _begin_teardown(self):
        """Schedule the teardown; ranks still inside libdsm get FAILING_GRACE s first."""
        if self.teardown is not None:
            return
        t = time.monotonic()
        self.teardown = self._schedule(t + FAILING_GRACE)
        self.master.tell_all(wire.Message.ENDING)   # --trace/--stats: write what you have
        self._advance_teardown(t)

    def _schedule(self, t):
        return [(t, self._close_all),
                (t + CLOSE_GRACE, functools.partial(self._signal_all, signal.SIGTERM)),
                (t + CLOSE_GRACE + procs.TERM_GRACE,
                 functools.partial(self._signal_all, signal.SIGKILL))]

    def _failing(self):
        """Ranks running inside libdsm (init, no finalize, or said they lost a peer) but
        the culprit: they find the failure through their peers, and say so."""
        if self.signalled or not self.waits:
            return []
        return [r for r in self.ranks if (r.lost_peer or r.init and not r.finalized)
                and r.proc and r.exited_at is None and r is not self.culprit]

    def _writing(self):
        """Ranks told ENDING that still run and have not said ENDED: writing the
        --trace/--stats report that closing their connection would cut short."""
        if self.opts.report is None or not self.opts.report.wanted:
            return []
        return [r for r in self.ranks if r.index in self.master.conns and r.proc
                and r.exited_at is None and not r.said_last]

    def _advance_teardown(self, now):
        """Run the teardown steps that are due.  Connections close FAILING_GRACE after
        the failure while a rank is failing because of it or writing its report, else
        at once; a second stop signal runs them all at once (now = inf)."""
        if (self.teardown and self.teardown[0][1] == self._close_all and not self._failing()
                and not self._writing()):
            self.teardown = self._schedule(min(now, self.teardown[0][0]))
        while self.teardown and self.teardown[0][0] <= now:
            self.teardown.pop(0)[1]()

    def _close_all(self):
        """Close the master socket and every rank connection: ranks exit by themselves.

        A rank that never registered has no connection to see close: SIGTERM now.
        """
        if self.master.sock.fileno() in self.loop:
            self.loop.remove(self.master.sock.fileno())
        self.loop.remove(self.in_fd)
        self.master.stop_listening()
        for index in list(self.master.conns):
            self._close_conn(index)
        for r in self.ranks:
            if r.proc and r.index not in self.master.registrations:
                r.proc.signal_group(signal.SIGTERM)

    def _signal_all(self, sig):
        for r in self.ranks:
            if r.proc:
                r.proc.signal_group(sig)

    def _cleanup(self):
        """Whatever happened: nothing outlives the job, every fd is closed."""
        started = [r.proc for r in self.ranks if r.proc]
        if self.master is not None:
            self._close_all()
        procs.shutdown(started)
        for p in started:
            p.kill_leftovers()
            p.close()
        # The masters last: stopping one ends every session still going through it.
        masters = [m.proc for m in self.control_masters if m.proc]
        procs.shutdown(masters)
        for p in masters:
            p.kill_leftovers()
            p.close()
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            self.janitor.close()
