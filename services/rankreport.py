"""What a rank reports to dsmexec, defined once for both sides: stdlib only,
it imports nothing of libdsm or of the launcher.

**Stats and trace** (dsmexec --stats / --trace).  dsmexec names a directory
in DSM_REPORT_DIR (a DSM_* variable, so it reaches ssh and Slurm ranks too;
the hosts share the filesystem) and, for --trace, a buffer size in
DSM_TRACE_EVENTS.  At finalize each rank writes ``rank-N.json`` there
(`write_rank`), a document of `rank_document`'s fields; dsmexec reads
them back with `read_ranks` (services/report.py merges them).  Events are
``[kind, start_ns, dur_ns, arg, peer, write]``: kind "fault", "serve",
"lock", "sync", "checkpoint" or "restore"; a sync event's arg is the
collective's name ("barrier", "bcast", "reduce", "gather"), as the binding
names it; a checkpoint's or restore's packs the generation above bit
GEN_SHIFT and the bytes this rank wrote or read below it (`generation_bytes`).

**Failure.**  A rank whose core lost a peer says so at once with a
LOST_PEER control message (services/wire.py) whose body is
``{"peer": rank, "how": "closed"|"silent", "peer_error": text}``, written
by the C core itself (libdsm/csrc/peer.c); `lost_peer` reads it.

**Last words.**  A rank that ends without finishing (its program raised or
exited without finalize, or dsmexec sends ENDING) runs what libdsm
registered with `at_end`: its --trace/--stats report (services/rank.py
calls `last_words`).
"""
import json
import os
import sys
import threading

DIR_VAR, EVENTS_VAR = "DSM_REPORT_DIR", "DSM_TRACE_EVENTS"
GEN_SHIFT = 40
"""libdsm/csrc/dsm_api.h's DSM_EV_GEN_SHIFT."""
LOST_HOW = ("closed", "silent")
"""A lost peer's connection closed or was reset; or it sent nothing past DSM_HEARTBEAT_S."""


def rank_document(rank, host, page_size, clocks, stats, hot_pages, events, dropped):
    """One rank's stats-and-trace document.  clocks: (wall ns, monotonic ns) taken
    together at init, to put the core's monotonic event times on the wall clock."""
    return {"rank": rank, "host": host, "page_size": page_size, "clocks": clocks,
            "stats": stats, "hot_pages": hot_pages, "events": events, "dropped": dropped}


def generation_bytes(arg):
    """A checkpoint or restore event's arg as (generation, bytes)."""
    return arg >> GEN_SHIFT, arg & ((1 << GEN_SHIFT) - 1)


def rank_path(directory, rank):
    """Where rank's document goes in directory."""
    return os.path.join(directory, "rank-%d.json" % rank)


def write_rank(directory, doc):
    """Write doc as rank-N.json in directory, atomically: a reader sees all or none."""
    path = rank_path(directory, doc["rank"])
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)


def read_ranks(directory):
    """The rank documents in directory, by rank."""
    docs = []
    for name in os.listdir(directory):
        if name.startswith("rank-") and name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                docs.append(json.load(f))
    return sorted(docs, key=lambda d: d["rank"])


def lost_peer(body, nranks, accuser):
    """A LOST_PEER body -> (lost rank, how, text), or None when it names no
    other rank of the job (then it is no evidence against anyone)."""
    peer, how = body.get("peer"), body.get("how")
    if not isinstance(peer, int) or not 0 <= peer < nranks or peer == accuser \
            or how not in LOST_HOW:
        return None
    return peer, how, str(body.get("peer_error", ""))


LAST_WORDS = []
"""What runs once when the rank ends without finishing: see the module's doc."""
_SPEAKING = threading.Lock()
"""Held while the last words run."""
LAST_WORDS_WAIT = 10.0
"""Seconds a second caller waits for the first one's last words at most (a stuck
program may hold what they need)."""


def at_end(fn):
    """Run fn (no arguments) if the rank ends without finishing; once, see the module's doc."""
    LAST_WORDS.append(fn)


def last_words(timeout=None):
    """Run the LAST_WORDS, each once; with a timeout, in a thread given that long (a
    stuck program may hold what they need).  Two callers (the program's end and an
    ENDING) do not race: the second returns once the first is done, so the rank
    does not exit while a report is half written."""
    def run():
        if not _SPEAKING.acquire(timeout=LAST_WORDS_WAIT):
            return
        try:
            while LAST_WORDS:
                fn = LAST_WORDS.pop()
                try:
                    fn()
                except Exception as e:      # one rank's report is not worth its traceback
                    sys.stderr.write("dsm rank: could not write its last words: %s\n" % e)
        finally:
            _SPEAKING.release()
    if timeout is None:
        run()
        return
    t = threading.Thread(target=run, name="dsm-last-words", daemon=True)
    t.start()
    t.join(timeout)
