"""Every rank's Python stack on request: where a hung job is stuck.

Rank side: `register`, which services/rank.py calls first thing, makes
REQUEST_SIGNAL (SIGUSR1) write every thread's Python stack to the rank's
stderr.  faulthandler writes it from its C signal handler, so it comes out
even while a thread holds the GIL (blocked in a DSM page fault).  The C core
may add what each thread waits for on the same request: a handler it
installs for REQUEST_SIGNAL must call the one it replaces (faulthandler's).

Launcher side: services/job.py asks each rank that registered (a local rank
gets the signal; an ssh or Slurm rank a STACKS message, which its watch
thread turns into the signal) and makes a `Wait`: the job is stopped once
every rank asked has written something and then all went quiet for QUIET s,
or after CAP s at most.

Stdlib only; never imports libdsm.
"""
import faulthandler
import os
import signal

from libdsm_services import wire

REQUEST_SIGNAL = signal.SIGUSR1
QUIET = 0.2
"""Seconds without output from any rank after which the stacks are taken to be out."""
CAP = 3.0
"""Seconds the launcher waits for the stacks at most."""


def register():
    """In a rank: REQUEST_SIGNAL dumps every thread's stack to stderr (fd 2).

    Not chained: the signal's default action would end the rank.
    """
    faulthandler.register(REQUEST_SIGNAL, all_threads=True, chain=False)


def request_self():
    """In a rank's watch thread, on a STACKS message: the request, as a signal to itself."""
    signal.raise_signal(REQUEST_SIGNAL)


def ask(ranks, master):
    """Launcher side: ask each of `ranks` (start.Rank, registered) for its stacks, through
    `master` (master.Master) for a rank elsewhere; return the indices of those asked."""
    asked = []
    for r in ranks:
        try:
            if r.proc.poll() is not None:
                continue
            if r.local:
                os.kill(r.proc.pid, REQUEST_SIGNAL)
            elif not master.tell(r.index, wire.Message.STACKS):
                continue
            asked.append(r.index)
        except OSError:
            pass                # it is going: its exit tells
    return asked


class Wait:
    """The launcher's wait for the stacks of the ranks `asked` (their indices);
    `then` runs when it is over."""

    def __init__(self, now, asked, then):
        self.started = self.heard = now
        self.silent = set(asked)        # asked, and nothing heard from them since
        self.then = then

    def output(self, rank, now):
        """Rank `rank` wrote something: the stacks are coming."""
        self.silent.discard(rank)
        self.heard = now

    def deadline(self):
        """When the wait is over unless more output comes."""
        if self.silent:
            return self.started + CAP
        return min(self.heard + QUIET, self.started + CAP)
