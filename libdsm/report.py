"""What a rank hands to `dsmexec --trace` / `--stats` at finalize.

dsmexec names a directory in DSM_REPORT_DIR (a DSM_* variable, so it
reaches ssh and Slurm ranks too; the hosts share the filesystem) and, for
--trace, a buffer size in DSM_TRACE_EVENTS.  At init a rank starts the C
core's event trace; at finalize it writes ``rank-N.json`` there: its
counters, the pages it gave up most and its events, with the pair of
clocks that turns the core's monotonic times into wall-clock times.
A rank that ends without finalize (its program failed, or dsmexec ends the
job) writes the same file, without hot pages, as its last words
(services/rank.py).  services/report.py merges the files.  Without
DSM_REPORT_DIR this does nothing.
"""
import json
import os
import time

from libdsm import _binding
from libdsm_services import rank as bootstrap

DIR_VAR, EVENTS_VAR = "DSM_REPORT_DIR", "DSM_TRACE_EVENTS"


class Report:
    """This rank's report; `start` after the core started, `write` after finalize."""

    def __init__(self, rank, host, environ=None):
        environ = os.environ if environ is None else environ
        self.rank, self.host = rank, host
        self.dir = environ.get(DIR_VAR) or None
        self.capacity = int(environ.get(EVENTS_VAR) or 0) if self.dir else 0
        self.clocks = None

    def start(self):
        if self.capacity:
            _binding.trace_start(self.capacity)
        self.clocks = (time.time_ns(), time.monotonic_ns())
        if self.dir:
            bootstrap.at_end(self._last_words)

    def _last_words(self):
        """The rank ends without finalize: write what there is, unless written already."""
        if not os.path.exists(self._path()):
            self.write(_binding.stats(), [], _binding.page_size())

    def _path(self):
        return os.path.join(self.dir, "rank-%d.json" % self.rank)

    def write(self, stats, hot_pages, page_size):
        """Write rank-N.json (atomically: a reader sees all of it or none)."""
        if not self.dir:
            return
        events, dropped = _binding.trace_events() if self.capacity else ([], 0)
        doc = {"rank": self.rank, "host": self.host, "page_size": page_size,
               "clocks": self.clocks, "stats": stats, "hot_pages": hot_pages,
               "events": events, "dropped": dropped}
        path = self._path()
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(path + ".tmp", path)
