"""Who and where: the ranks (partitions), their hosts, and which
rows of an array each rank should own so that no two share a page."""
import math
import warnings


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
        self._warn_if_shared(nrows, row_bytes, per * unit)
        start = min(nrows, rank * per * unit)
        return slice(start, min(nrows, start + per * unit))

    def _warn_if_shared(self, nrows, row_bytes, block):
        """Warn when some rank's block of rows begins inside a page: the
        ranks on both sides then share that page."""
        cuts = [r * block for r in range(1, self.size) if r * block < nrows]
        shared = [c for c in cuts if c * row_bytes % self._page_size]
        if shared:
            warnings.warn(
                "row_block(%d, %d): rows of %d bytes cannot be split over %d ranks on page "
                "boundaries; the ranks meeting at row %d share a page (false sharing).  "
                "Make the array with dsm.array(..., pad_rows=True) and pass its row "
                "stride: row_block(nrows, arr.strides[0])"
                % (nrows, row_bytes, row_bytes, self.size, shared[0]), RuntimeWarning,
                stacklevel=3)
