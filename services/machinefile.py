"""The machine file: which host runs which rank.

One host per line; each line gives one rank, or k consecutive ranks with
``host slots=k`` (Open MPI) or ``host:k`` (MPICH).  Ranks go to the lines
in order.  Blank lines and ``#`` comments (whole-line or trailing) are
ignored, ``user@host`` is accepted and a host may appear several times::

    # two ranks here, four on node7 as user dsm, then one more here
    localhost
    localhost     # a second rank on this machine
    dsm@node7 slots=4
    localhost

Stdlib only.  Errors are `MachineFileError` (a ValueError) naming the file
and the line.
"""
import functools
import re
import socket
from typing import NamedTuple, Optional

# A user or a host: no whitespace, no shell or ssh metacharacters, and no
# leading '-' (ssh would take it for an option).  Hosts may be IPv6 literals.
_USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*\Z")
_HOST_RE = re.compile(r"[A-Za-z0-9_.:][A-Za-z0-9_.:%-]*\Z")
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class MachineFileError(ValueError):
    """The machine file is missing, empty or has a bad line.

    ``path`` and ``lineno`` (None for whole-file problems) say where;
    ``reason`` says what.
    """

    def __init__(self, path, lineno, reason):
        self.path, self.lineno, self.reason = path, lineno, reason
        where = "machine file %s" % path
        if lineno is not None:
            where += ", line %d" % lineno
        super().__init__("%s: %s" % (where, reason))


class Host(NamedTuple):
    """One machine-file entry: who runs a rank where, and which line said so."""
    user: Optional[str]
    host: str
    lineno: int
    text: str

    @property
    def target(self):
        """``user@host`` or ``host``, as the user wrote it."""
        return "%s@%s" % (self.user, self.host) if self.user else self.host


_SLOTS_RE = re.compile(r"slots=(\d+)\Z")
_MPICH_RE = re.compile(r"([^:]+):(\d+)\Z")      # one colon only: '::1' is a host


def parse_slots(entry):
    """'host slots=4' or 'host:4' -> ('host', 4); 'host' -> ('host', 1).

    Raises ValueError for another word after the host or a count below 1.
    """
    words = entry.split()
    if len(words) == 1:
        m = _MPICH_RE.match(entry)
        return (m.group(1), _count(entry, m.group(2))) if m else (entry, 1)
    m = _SLOTS_RE.match(words[1]) if len(words) == 2 else None
    if not m:
        raise ValueError("%r: whitespace inside an entry (one host per line; only slots=N "
                         "may follow the host)" % entry)
    return words[0], _count(entry, m.group(1))


def _count(entry, digits):
    if int(digits) < 1:
        raise ValueError("%r: a host needs at least 1 slot" % entry)
    return int(digits)


def parse_line(text):
    """One line -> (user, host, slots), or None for a blank or comment line.

    Raises ValueError with the reason (without file and line) for bad syntax.
    """
    entry = text.split("#", 1)[0].strip()
    if not entry:
        return None
    entry, slots = parse_slots(entry)
    user, at, host = entry.rpartition("@")
    if at and not user:
        raise ValueError("%r: empty user before '@'" % entry)
    if not host:
        raise ValueError("%r: empty host" % entry)
    if at and not _USER_RE.match(user):
        raise ValueError("%r: bad user name %r" % (entry, user))
    if not _HOST_RE.match(host):
        raise ValueError("%r: bad host name %r" % (entry, host))
    return (user or None), host, slots


def parse(path, ranks=None):
    """Read a machine file; return a non-empty list of `Host`, one per rank, in rank order.

    A line with k slots gives k consecutive ranks; with ``ranks`` (-n) only
    the first that many slots are used, and a file with fewer is an error.

    Raises MachineFileError for a file that cannot be read, holds no host, or
    has a line `parse_line` refuses.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MachineFileError(path, None, "cannot read it: %s" % reason) from None
    hosts = []
    for lineno, text in enumerate(lines, 1):
        try:
            parsed = parse_line(text)
        except ValueError as e:
            raise MachineFileError(path, lineno, str(e)) from None
        if parsed:
            hosts += [Host(parsed[0], parsed[1], lineno, text)] * parsed[2]
    if not hosts:
        raise MachineFileError(path, None, "names no host (only blank lines and comments)")
    if ranks is not None and ranks > len(hosts):
        raise MachineFileError(path, None, "has %d slots, -n asks for %d ranks"
                               % (len(hosts), ranks))
    return hosts[:ranks]


@functools.lru_cache(maxsize=1)
def _own_names():
    """This machine's names: the hostname and its fully qualified form."""
    name = socket.gethostname()
    return {name.lower(), socket.getfqdn(name).lower()}


def is_local(host):
    """True for localhost, loopback and this machine's own (fq) hostname."""
    host = host.lower()
    return host in _LOCAL_NAMES or host in _own_names()
