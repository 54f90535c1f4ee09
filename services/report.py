"""dsmexec --trace FILE and --stats: what the ranks saw, gathered at the end.

Each rank writes ``rank-N.json`` at finalize into the directory that
dsmexec names in DSM_REPORT_DIR (services/rankreport.py defines the
files, libdsm/report.py writes them): a hidden
temporary directory beside the trace file, or in the working directory,
since remote ranks share those paths but not /tmp.  `Collector`
makes that directory, sets the variables, and at the end merges the files:
into one Chrome trace-event JSON (Perfetto and chrome://tracing open it; a
track per rank, the application's faults and waits on one thread, the
pages its comm thread served on another), and into a table of counters.
Stdlib only; it never imports libdsm.
"""
import json
import os
import shutil
import sys
import tempfile

from libdsm_services.rankreport import DIR_VAR, EVENTS_VAR, generation_bytes, read_ranks

TRACE_EVENTS = 1 << 20          # per rank: 32 MiB of records in the core
APP_TID, COMM_TID = 1, 2


def add_options(parser):
    parser.add_argument("--trace", metavar="FILE",
                        help="write a Chrome trace-event JSON of the whole job to FILE "
                        "(faults, page serves, barrier and lock waits; Perfetto opens it)")
    parser.add_argument("--stats", action="store_true",
                        help="print each rank's faults, bytes moved, waits and most "
                        "given-up pages at the end")


class Collector:
    """The per-rank files of one job: `environ` before it, `finish` after."""

    def __init__(self, trace_file=None, stats=False):
        self.trace_file, self.stats = trace_file, stats
        self.dir = None

    @property
    def wanted(self):
        return bool(self.trace_file or self.stats)

    def environ(self, env):
        """env with the variables that make the ranks write their files."""
        if not self.wanted:
            return env
        self.dir = _shared_tempdir(os.path.dirname(os.path.abspath(self.trace_file or ".")))
        env = dict(env, **{DIR_VAR: self.dir})
        if self.trace_file:
            env[EVENTS_VAR] = env.get(EVENTS_VAR) or str(TRACE_EVENTS)
        return env

    def finish(self, nranks=0, out=sys.stdout, err=sys.stderr, quiet=False):
        """Write the trace and print the table from what the ranks of a job
        of nranks left (quiet: the job never started; only clean up)."""
        if not self.dir:
            return
        try:
            if quiet:
                return
            ranks = read_ranks(self.dir)
            if not ranks and not nranks:
                return          # no ranks here: a dsmexec it ran (salloc) reports
            missing = sorted(set(range(nranks)) - {r["rank"] for r in ranks})
            if missing:
                err.write("dsmexec: no --trace/--stats report from rank%s %s: %s before "
                          "finalize()\n" % ("s" if len(missing) > 1 else "",
                                             ", ".join(map(str, missing)),
                                             "they ended" if len(missing) > 1 else "it ended"))
            if self.trace_file:
                with open(self.trace_file, "w") as f:
                    json.dump(chrome_trace(ranks), f, separators=(",", ":"))
                for r in ranks:
                    if r["dropped"]:
                        err.write("dsmexec: rank %d dropped %d trace events (buffer full; "
                                  "raise DSM_TRACE_EVENTS)\n" % (r["rank"], r["dropped"]))
            if self.stats:
                out.write(stats_table(ranks))
                out.flush()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _shared_tempdir(near):
    """A new directory beside `near` (where the trace goes, or the working
    directory: paths the hosts share), or in /tmp if that is not writable."""
    try:
        return tempfile.mkdtemp(prefix=".dsmexec-report-", dir=near)
    except OSError:
        return tempfile.mkdtemp(prefix="dsmexec-report-")


def chrome_trace(ranks):
    """The trace-event document of every rank's events, times in µs from the
    job's first event, on wall clocks (each rank's monotonic clock shifted by
    the wall-monotonic pair it took at init)."""
    starts = [e[1] + r["clocks"][0] - r["clocks"][1] for r in ranks for e in r["events"]]
    t0 = min(starts) if starts else 0
    out = []
    for r in ranks:
        pid, shift = r["rank"], r["clocks"][0] - r["clocks"][1] - t0
        out += [{"ph": "M", "name": "process_name", "pid": pid,
                 "args": {"name": "rank %d (%s)" % (pid, r["host"])}},
                {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}},
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": APP_TID,
                 "args": {"name": "application"}},
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": COMM_TID,
                 "args": {"name": "comm thread"}}]
        out += [_event(pid, shift, *e) for e in r["events"]]
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"page_size": ranks[0]["page_size"] if ranks else 0,
                          "dropped": {str(r["rank"]): r["dropped"] for r in ranks}}}


def _event(pid, shift, kind, start, dur, arg, peer, write):
    ts, access = (start + shift) / 1000.0, "write" if write else "read"
    if kind == "serve":
        return {"name": "serve", "cat": "serve", "ph": "i", "s": "t", "ts": ts, "pid": pid,
                "tid": COMM_TID, "args": {"page": arg, "to": peer, "access": access}}
    ev = {"ph": "X", "ts": ts, "dur": dur / 1000.0, "pid": pid, "tid": APP_TID}
    if kind == "fault":
        ev.update(name="%s fault" % access, cat="fault",
                  args={"page": arg, "access": access, "latency_us": round(dur / 1000.0, 1)})
    elif kind == "lock":
        ev.update(name="lock wait", cat="lock", args={"lock": arg})
    elif kind in ("checkpoint", "restore"):
        gen, nbytes = generation_bytes(arg)
        ev.update(name=kind, cat="checkpoint", args={"generation": gen, "bytes": nbytes})
    else:
        ev.update(name=arg, cat="sync", args={})        # the collective's name
    return ev


COLUMNS = ("rank", "host", "read f", "write f", "pages out", "bytes out", "fault ms",
           "sync ms", "lock ms", "given up most (page:times)")


def _row(r):
    s = r["stats"]
    out = s["pages_sent"] * r["page_size"] + s["diff_bytes"]
    hot = " ".join("%d:%d" % (p, n) for p, n in r["hot_pages"][:3]) or "-"
    return [str(r["rank"]), r["host"], str(s["read_faults"]), str(s["write_faults"]),
            str(s["pages_sent"]), _bytes(out), "%.1f" % (s["fault_wait_ns"] / 1e6),
            "%.1f" % (s["sync_wait_ns"] / 1e6), "%.1f" % (s["lock_wait_ns"] / 1e6), hot]


def _bytes(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return "%d %s" % (n, unit) if unit == "B" else "%.1f %s" % (n, unit)
        n /= 1024.0
    return "%.1f GiB" % n


def stats_table(ranks):
    """The --stats table: a row per rank and a total."""
    rows = [_row(r) for r in ranks]
    if ranks:
        total = {"rank": "all", "host": "", "page_size": ranks[0]["page_size"],
                 "stats": {k: sum(r["stats"][k] for r in ranks) for k in ranks[0]["stats"]},
                 "hot_pages": _merge_hot(ranks)}
        rows.append(_row(total))
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
              for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    return "dsmexec --stats:\n" + "\n".join(line.rstrip() for line in lines) + "\n"


def _merge_hot(ranks):
    times = {}
    for r in ranks:
        for page, n in r["hot_pages"]:
            times[page] = times.get(page, 0) + n
    return sorted(times.items(), key=lambda pn: -pn[1])
