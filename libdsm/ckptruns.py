"""Page runs, [[first page, count], ...]: what a checkpoint part holds.

Stdlib and numpy only; libdsm.checkpoint finds and saves them."""
import errno
import os


def runs_of(mask):
    """A bool array over pages -> [[first, count], ...] of its runs of True."""
    import numpy as np
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(mask, np.int8), [0]))))
    return [[int(a), int(b - a)] for a, b in zip(edges[0::2], edges[1::2])]


def pack_runs(runs):
    """Runs as bytes: a collective pickles them as one object, not thousands."""
    import numpy as np
    return np.asarray(runs, np.int64).tobytes()


def unpack_runs(data):
    import numpy as np
    return np.frombuffer(data, np.int64).reshape(-1, 2).tolist()


def extend(runs, first, count):
    """Append the run [first, count) to runs ([[first, count], ...]), merged
    with the last one when they touch."""
    if runs and runs[-1][0] + runs[-1][1] == first:
        runs[-1][1] += count
    else:
        runs.append([first, count])


def mask(runs, npages):
    """A numpy bool array of npages, True on the pages of runs."""
    import numpy as np
    out = np.zeros(npages, bool)
    for first, count in runs:
        out[first:first + count] = True
    return out


def data_runs(fd, page_size, runs):
    """The pages of runs that hold data in the file fd (a rank's memfd), as
    runs: the others are holes, pages never written (zero), which a restore
    leaves zero.  Found with lseek SEEK_DATA/SEEK_HOLE, touching no page."""
    ps, out = page_size, []
    for first, count in runs:
        at, end = first * ps, (first + count) * ps
        while at < end:
            try:
                at = os.lseek(fd, at, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:      # ENXIO: no data past at
                    raise
                break
            if at >= end:
                break
            stop = -(-min(os.lseek(fd, at, os.SEEK_HOLE), end) // ps) * ps
            extend(out, at // ps, (stop - at) // ps)
            at = stop
    return out
