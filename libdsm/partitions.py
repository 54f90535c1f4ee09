"""Who and where: the ranks (seed 004's partitions), their hosts, and which
rows of an array each rank should own so that no two share a page."""
import math


class Partitions:
    """The job as seen from `rank`: size ranks, rank r on hostnames[r]."""

    def __init__(self, rank, hostnames, page_size):
        self.rank = rank
        self.size = len(hostnames)
        self._hostnames = list(hostnames)
        self._page_size = page_size

    def _check(self, rank):
        if not 0 <= rank < self.size:
            raise ValueError("rank %d out of range 0..%d" % (rank, self.size - 1))
        return rank

    def hostname(self, rank=None):
        """The machine-file host of a rank (default: this one)."""
        return self._hostnames[self._check(self.rank if rank is None else rank)]

    def hostnames(self):
        """Every rank's host, by rank."""
        return list(self._hostnames)

    def row_block(self, nrows, row_bytes, rank=None):
        """The rows a rank (default: this one) should own, as a slice: see
        `Dsm.row_block`."""
        rank = self.rank if rank is None else rank
        unit = self._page_size // math.gcd(row_bytes, self._page_size)
        if unit * self.size > nrows:
            unit = 1
        units = -(-nrows // unit)
        per = -(-units // self.size)
        start = min(nrows, rank * per * unit)
        return slice(start, min(nrows, start + per * unit))
