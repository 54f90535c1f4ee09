"""Whom dsmexec blames when a job fails: by evidence, never by timing.

A rank whose core lost a peer says which, at once (LOST_PEER, written by
the C core itself; services/rankreport.py): it is not to blame, the rank
it names is, or, should that one have named another, the last of the
chain (in a circle, the first named).  A rank named for silence (the
heartbeat's verdict) may be stopped or cut off: dsmexec kills it and
blames it with status 1.  A rank named for a closed connection is blamed
with its own status once it ended.  Ranks that end with no accusation are
judged those killed by a signal first, then in the order they were
reaped, then by number.

No I/O: services/job.py feeds the evidence in and acts on the answers.
"""
from collections import namedtuple

from libdsm_services import rankreport

Accusation = namedtuple("Accusation", "accuser peer how text")
"""Rank `accuser` lost rank `peer` (how: "closed" or "silent"; text: its core's words)."""


class Evidence:
    """What the ranks of one job said about each other."""

    def __init__(self, nranks):
        self.nranks = nranks
        self.heard = {}             # accuser -> Accusation, or None: no one rank named

    def lost_peer(self, accuser, body):
        """Rank accuser's LOST_PEER body."""
        got = rankreport.lost_peer(body, self.nranks, accuser)
        self.heard[accuser] = Accusation(accuser, *got) if got else None

    def culprit(self):
        """The Accusation naming the rank to blame, or None while nobody was named."""
        for first in self.heard.values():
            if first is None:
                continue            # a rank that failed, blaming no one rank
            seen, last = {first.accuser}, first
            while self.heard.get(last.peer) and last.peer not in seen:
                seen.add(last.peer)
                last = self.heard[last.peer]
            return first if last.peer in seen else last
        return None


def signal_of(rank):
    """The signal that killed a rank (services/start.py's Rank), if one did; for an
    ssh rank, as its supervisor says (ssh's own status cannot tell)."""
    if rank.reported and rank.reported[0] == rank.proc.status:
        return rank.reported[1]
    return rank.proc.signal


def judge_order(ended):
    """Ranks that ended, in the order to judge them: those that said they lost a
    peer last (they wait for the culprit they named), those killed by a signal
    first; then as reaped (ranks reaped in one poll share a time), then by number."""
    return sorted(ended, key=lambda r: (r.lost_peer, signal_of(r) is None, r.exited_at, r.index))
