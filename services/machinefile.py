"""The machine file: which host runs which rank.

One host per line; rank N runs on the Nth host.  Blank lines and ``#``
comments (whole-line or trailing) are ignored, ``user@host`` is accepted and a
host may appear several times::

    # two ranks here, one on node7 as user dsm
    localhost
    localhost     # a second rank on this machine
    dsm@node7

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


def parse_line(text):
    """One line -> (user, host), or None for a blank or comment line.

    Raises ValueError with the reason (without file and line) for bad syntax.
    """
    entry = text.split("#", 1)[0].strip()
    if not entry:
        return None
    if any(c.isspace() for c in entry):
        raise ValueError("%r: whitespace inside an entry (one host per line)" % entry)
    user, at, host = entry.rpartition("@")
    if at and not user:
        raise ValueError("%r: empty user before '@'" % entry)
    if not host:
        raise ValueError("%r: empty host" % entry)
    if at and not _USER_RE.match(user):
        raise ValueError("%r: bad user name %r" % (entry, user))
    if not _HOST_RE.match(host):
        raise ValueError("%r: bad host name %r" % (entry, host))
    return (user or None), host


def parse(path):
    """Read a machine file; return a non-empty list of `Host`, in rank order.

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
            hosts.append(Host(parsed[0], parsed[1], lineno, text))
    if not hosts:
        raise MachineFileError(path, None, "names no host (only blank lines and comments)")
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
