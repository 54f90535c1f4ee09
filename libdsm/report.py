"""What a rank hands to `dsmexec --trace` / `--stats` at finalize.

services/rankreport.py defines the report (variables, file, fields) for
both sides.  At init a rank starts the C core's event trace; at finalize
it writes its counters, the pages it gave up most and its events, with
the pair of clocks that turns the core's monotonic times into wall-clock
times.  A rank that ends without finalize (its program failed, or dsmexec
ends the job) writes the same file, without hot pages, as its last words
(rankreport.at_end).  Without DSM_REPORT_DIR this does nothing.
"""
import os
import time

from libdsm import _binding
from libdsm_services.rankreport import (DIR_VAR, EVENTS_VAR, at_end, rank_document,
                                        rank_path, write_rank)


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
            at_end(self._last_words)

    def _last_words(self):
        """The rank ends without finalize: write what there is, unless written already."""
        if not os.path.exists(rank_path(self.dir, self.rank)):
            self.write(_binding.stats(), [], _binding.page_size())


    def write(self, stats, hot_pages, page_size):
        """Write rank-N.json (atomically: a reader sees all of it or none)."""
        if not self.dir:
            return
        events, dropped = _binding.trace_events() if self.capacity else ([], 0)
        write_rank(self.dir, rank_document(self.rank, self.host, page_size, self.clocks, stats,
                                           hot_pages, events, dropped))
