"""One helper program for the launcher tests: run under dsmexec, it does what a test asks.

    helper_prog.py [--rank-print] [--fail RANK:STATUS] [--exception RANK:MSG]
                   [--kill RANK:SIGNAL] [--sleep SECONDS] [--lines N]
                   [--init-no-finalize] [--orphan] [--listener] [--stuck RANK]
                   [--lost-peer RANK] [--told FILE] [--deep N] [--tag TEXT]

It never imports libdsm: it reads its rank from the bootstrap's context.
``--tag`` does nothing; it puts a marker in the command line of every rank
process so a test can find leftovers in /proc.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

import libdsm_services.rank
from libdsm_services import wire


def rank_of(spec):
    """'R:VALUE' -> (R, VALUE)."""
    rank, _, value = spec.partition(":")
    return int(rank), value


def deep(n, message):
    """Raise RuntimeError(message) from n calls down."""
    if n > 0:
        deep(n - 1, message)
    raise RuntimeError(message)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rank-print", action="store_true")
    p.add_argument("--fail", type=rank_of)
    p.add_argument("--exception", type=rank_of)
    p.add_argument("--kill", type=rank_of)
    p.add_argument("--sleep", type=float)
    p.add_argument("--lines", type=int)
    p.add_argument("--init-no-finalize", action="store_true")
    p.add_argument("--orphan", action="store_true")
    p.add_argument("--listener", action="store_true")
    p.add_argument("--stuck", type=int, help="this rank holds the GIL for good, SIGTERM ignored")
    p.add_argument("--lost-peer", type=int, help="this rank says it lost a peer, then takes "
                   "0.7 s to fail with a traceback, as a rank whose peer died does")
    p.add_argument("--told", help="--lost-peer's rank makes FILE once it told dsmexec; "
                   "--fail's rank exits only once FILE is there (not before the other "
                   "rank is failing, as when a peer's loss is what it fails of)")
    p.add_argument("--deep", type=int, default=0, help="raise --exception N calls deep")
    p.add_argument("--tag")
    a = p.parse_args()
    ctx = libdsm_services.rank.CONTEXT
    rank = ctx.rank if ctx else 0
    if a.rank_print:
        print("hello from rank %d of %d" % (rank, ctx.size if ctx else 1))
        print("stderr of rank %d" % rank, file=sys.stderr)
    if a.listener:
        print("listener %s %d" % ctx.listener.getsockname(), flush=True)
    if a.lines:
        for i in range(a.lines):
            # Long lines, written in pieces, on both streams: none may be split or mixed.
            body = ("r%d-i%d-" % (rank, i)) * 40
            sys.stdout.write(body[:100])
            sys.stdout.write(body[100:] + "|end\n")
            sys.stderr.write("err " + body + "|end\n")
    if a.init_no_finalize:
        ctx.notify(wire.Message.INIT)
    if a.orphan:
        # A child that would outlive the rank (and any test's timeout), tagged like the rank.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", str(a.tag)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if a.kill and a.kill[0] == rank:
        os.kill(os.getpid(), int(a.kill[1]))
        time.sleep(10)          # the signal is delivered before this ends
    if a.stuck == rank:
        print("rank %d stuck" % rank, flush=True)
        # No thread runs while this match holds the GIL: a rank stuck in C code,
        # and one that ignores SIGTERM: only SIGKILL ends it.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        re.match(r"(a+)+$", "a" * 60 + "b")
    if a.sleep:
        print("rank %d sleeping" % rank, flush=True)
        time.sleep(a.sleep)
    if a.lost_peer == rank:
        ctx.notify(wire.Message.LOST_PEER, {"peer": 1, "how": "closed",
                                            "peer_error": "rank 1 went away"})
        a.exception = (rank, "lost my peer")
        if a.told:
            open(a.told, "w").close()
    if a.exception and a.exception[0] == rank:
        deep(a.deep, a.exception[1])
    if a.fail and a.fail[0] == rank:
        while a.told and not os.path.exists(a.told):
            time.sleep(0.01)        # waits for an event: the test's timeout bounds it
        sys.exit(int(a.fail[1]))


if __name__ == "__main__":
    main()
