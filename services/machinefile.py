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
    node9 spare   # no rank; a restart moves a failed host's ranks here

A spare is also written ``node9:spare``.  The same entries, comma-separated,
make ``-H host1,host2:2,node9:spare`` (`parse_hosts`, `spares_of`).
No job has more than MAX_RANKS ranks: a slot count or a file beyond it is
refused while it is read, before a list of hosts that size is made.

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
SPARE = "spare"
"""The word after a host that makes it a spare: ``node9 spare`` (or ``node9:spare``)."""
MAX_RANKS = 1024
"""The most ranks a job can have: the C core's DSM_MAX_RANKS (libdsm/csrc/ground.h;
the ranks of a host reach the others through its leader).  A job where every rank
keeps its own copy of each page (DSM_SHARE=rank) has at most 64, which libdsm.init
checks.  Every launcher check reads it from here."""


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


_SLOTS_RE = re.compile(r"slots=(.*)\Z")
_MPICH_RE = re.compile(r"([^:]+):([^:]*)\Z")    # one colon only: '::1' is a host


def parse_slots(entry):
    """'host slots=4' or 'host:4' -> ('host', 4); 'host' -> ('host', 1).

    Raises ValueError for another word after the host, or a count that is
    not a whole number from 1 to MAX_RANKS.
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


def _count(entry, text):
    """A slot count: digits only (no sign, exponent or point), 1 to MAX_RANKS."""
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError("%r: the slot count %r is not a whole number from 1 to %d"
                         % (entry, text, MAX_RANKS))
    if len(text.lstrip("0")) > len(str(MAX_RANKS)) or int(text) > MAX_RANKS:
        raise ValueError("%r: %s slots, but a job has at most %d ranks"
                         % (entry, text, MAX_RANKS))
    if int(text) < 1:
        raise ValueError("%r: a host needs at least 1 slot" % entry)
    return int(text)


def parse_line(text):
    """One line -> (user, host, slots), or None for a blank or comment line.
    A spare host (``host spare`` or ``host:spare``) has 0 slots: it runs no
    rank until a restart gives it a failed host's (services/restart.py).

    Raises ValueError with the reason (without file and line) for bad syntax.
    """
    entry = text.split("#", 1)[0].strip()
    if not entry:
        return None
    words = entry.split()
    if len(words) == 2 and words[1] == SPARE:
        entry, slots = words[0], 0
    elif len(words) == 1 and _MPICH_RE.match(entry) and entry.endswith(":" + SPARE):
        entry, slots = entry[:-len(SPARE) - 1], 0
    else:
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


def read_lines(path):
    """The lines of a machine file; MachineFileError if it cannot be read as text."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MachineFileError(path, None, "cannot read it: %s" % reason) from None


def reads_as_machine_file(path):
    """True if path is a readable file whose every line `parse_line` accepts."""
    try:
        lines = read_lines(path)
        return any([parse_line(text) for text in lines])
    except ValueError:
        return False


def parse(path, ranks=None):
    """Read a machine file; return a non-empty list of `Host`, one per rank, in rank order.

    A line with k slots gives k consecutive ranks; with ``ranks`` (-n) only
    the first that many slots are used, and a file with fewer is an error.

    Raises MachineFileError for a file that cannot be read, holds no host,
    has a line `parse_line` refuses, or (without ``ranks``) more slots than
    MAX_RANKS: refused at the line that goes over, before anything starts.
    """
    return _hosts(read_lines(path), ranks, lambda lineno, reason: MachineFileError(
        path, lineno, reason))


def spares(path):
    """The spare hosts (``host spare`` lines) of a machine file, as `Host`s in
    file order; MachineFileError as `parse`."""
    return _spares(read_lines(path), lambda lineno, reason: MachineFileError(
        path, lineno, reason))


def spares_of(spec):
    """The spare hosts of -H's 'host1,node9:spare,...', as `Host`s in order
    (lineno: None); ValueError as `parse_hosts`."""
    return [h._replace(lineno=None) for h in _spares(
        spec.split(","), lambda n, reason: ValueError("-H %s: %s" % (spec, reason)))]


def _spares(lines, error):
    out = []
    for lineno, text in enumerate(lines, 1):
        try:
            parsed = parse_line(text)
        except ValueError as e:
            raise error(lineno, str(e)) from None
        if parsed and parsed[2] == 0:
            out.append(Host(parsed[0], parsed[1], lineno, text))
    return out


def parse_hosts(spec, ranks=None):
    """-H's 'host1,u@host2:2,...' -> the list of `Host` (lineno: the entry's number).

    Raises ValueError("-H SPEC: reason") as `parse` does for a machine file,
    and for more than MAX_RANKS entries.
    """
    entries = spec.split(",")
    if len(entries) > MAX_RANKS:
        raise ValueError("-H names %d hosts, but a job has at most %d ranks"
                         % (len(entries), MAX_RANKS))
    if "" in [e.strip() for e in entries]:
        raise ValueError("-H %s: an empty host between commas" % spec)
    hosts = _hosts(entries, ranks, lambda n, reason: ValueError("-H %s: %s" % (spec, reason)))
    return [h._replace(lineno=None) for h in hosts]


def _hosts(lines, ranks, error):
    """The hosts of `lines` (machine-file syntax), one per slot, at most `ranks` of them."""
    hosts, want = [], MAX_RANKS if ranks is None else ranks
    for lineno, text in enumerate(lines, 1):
        try:
            parsed = parse_line(text)
        except ValueError as e:
            raise error(lineno, str(e)) from None
        if not parsed:
            continue
        if ranks is None and len(hosts) + parsed[2] > MAX_RANKS:
            raise error(lineno, "more than %d slots, the most ranks a job can have; give "
                        "-n N to use the first N" % MAX_RANKS)
        hosts += [Host(parsed[0], parsed[1], lineno, text)] * min(parsed[2], want - len(hosts))
    if not hosts:
        raise error(None, "names no host (only blank lines and comments)")
    if ranks is not None and ranks > len(hosts):
        raise error(None, "has %d slots, -n asks for %d ranks" % (len(hosts), ranks))
    return hosts


@functools.lru_cache(maxsize=1)
def _own_names():
    """This machine's names: the hostname and its fully qualified form."""
    name = socket.gethostname()
    return {name.lower(), socket.getfqdn(name).lower()}


def is_local(host):
    """True for localhost, loopback and this machine's own (fq) hostname."""
    host = host.lower()
    return host in _LOCAL_NAMES or host in _own_names()
