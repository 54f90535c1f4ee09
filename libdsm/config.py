"""Configuration: init() arguments over DSM_* environment variables over
defaults, checked once with messages that say how to fix them.

DSM_SIZE             region bytes; suffixes K, M, G, T (default 1G: its pages cost
                     nothing until touched, its page table about 18 MB a rank);
                     refused at init beyond this host's memory + swap
DSM_BASE             fixed address of the region (default 0x200000000000)
DSM_BLOCK_PAGES      pages per round-robin block (default: npages // 4096, at least 1)
DSM_LOCKS            number of locks for dsm.lock() (default 4096)
DSM_READAHEAD        most pages a sequential read fault fetches; 1 turns it off (256)
DSM_SPIN_US          microseconds a waiting thread polls before it sleeps (default: 50
                     when this host runs no more ranks than it has CPUs, else 0)
DSM_WAIT             how a thread waiting for a reply polls: "reply" (it receives the
                     reply itself: no thread wake-up on the way back) or "yield" (it
                     yields the CPU while the comm thread receives); default "reply"
                     when this host has two CPUs for each rank, else "yield"
DSM_HOLD_US          microseconds a received page is kept before it is given away (50)
DSM_CONNECT_TIMEOUT  seconds to build the connections between ranks (30)
DSM_CONSISTENCY      "sequential" (the default) or "release"; every rank the same
DSM_TWIN_LIMIT       release mode: bytes of twins a rank keeps before it sends pages
                     home early; suffixes K, M, G (64M)
DSM_HEARTBEAT_S      seconds of silence after which a peer is declared dead, and
                     the job fails (10); 0 turns failure detection off
DSM_DEBUG            trace protocol messages to stderr when set to 1
DSM_SHARE            "rank" (the default: every rank its own copy of each page, kept
                     coherent by the protocol) or "host" (the ranks of a host map one
                     physical copy: on one host no page faults, on several the
                     protocol runs between hosts; docs/host-shared.md)
DSM_VHOSTS           split the ranks of each host into this many virtual hosts, each
                     a block of consecutive ranks, as if they ran on different
                     machines (default 1: for tests and the simulator's scenarios);
                     their connections then go through each one's leader
                     (docs/many-ranks.md), in per-rank mode too
"""
import os

from libdsm.errors import ConfigError

DEFAULTS = {
    "size": 1 << 30,
    "base": 0x200000000000,
    "block_pages": None,
    "hold_us": 50,
    "locks": 4096,
    "readahead": 256,
    "spin_us": None,
    "wait": None,
    "connect_timeout": 30.0,
    "consistency": "sequential",
    "twin_limit": 64 << 20,
    "heartbeat_s": 10.0,
    "debug": False,
    "share": "rank",
    "vhosts": 1,
}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
TARGET_BLOCKS = 4096
CONSISTENCIES = ("sequential", "release")
SHARES = ("rank", "host")
WAITS = ("reply", "yield")
SPIN_US = 50
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.1, 86400


META_BYTES_PER_PAGE = 72
"""What the C core keeps per page of the region at init (page table, homes,
counters): measured as the RSS init adds for a 4 GiB region, 67 B a page."""


def parse_size(text):
    """'64M' -> 67108864.  Raises ValueError."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    return int(t[:len(t) - len(unit)]) * _UNITS[unit]


def human(n):
    """A byte count for people: '1.5 GiB'."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if n >= scale:
            return "%.4g %s" % (n / scale, unit)
    return "%d bytes" % n


_PARSERS = {
    "size": ("DSM_SIZE", parse_size),
    "base": ("DSM_BASE", lambda s: int(s, 0)),
    "block_pages": ("DSM_BLOCK_PAGES", int),
    "hold_us": ("DSM_HOLD_US", int),
    "locks": ("DSM_LOCKS", int),
    "readahead": ("DSM_READAHEAD", int),
    "spin_us": ("DSM_SPIN_US", int),
    "wait": ("DSM_WAIT", str),
    "connect_timeout": ("DSM_CONNECT_TIMEOUT", float),
    "consistency": ("DSM_CONSISTENCY", lambda s: s.strip().lower()),
    "twin_limit": ("DSM_TWIN_LIMIT", parse_size),
    "heartbeat_s": ("DSM_HEARTBEAT_S", float),
    "debug": ("DSM_DEBUG", lambda s: s.strip() not in ("", "0")),
    "share": ("DSM_SHARE", lambda s: s.strip().lower()),
    "vhosts": ("DSM_VHOSTS", int),
}


_ACCEPTS = {                # init() keyword -> (types it takes, what to say)
    "size": ((int, str), "a byte count: an int or a string such as '1G'"),
    "base": ((int, str), "an address: an int or a string such as '0x200000000000'"),
    "block_pages": ((int,), "an int"),
    "hold_us": ((int,), "an int"),
    "locks": ((int,), "an int"),
    "readahead": ((int,), "an int"),
    "spin_us": ((int,), "an int"),
    "wait": ((str,), "'reply' or 'yield'"),
    "connect_timeout": ((int, float), "seconds, an int or a float"),
    "consistency": ((str,), "'sequential' or 'release'"),
    "twin_limit": ((int, str), "a byte count: an int or a string such as '64M'"),
    "heartbeat_s": ((int, float), "seconds, an int or a float"),
    "debug": ((bool,), "True or False"),
    "share": ((str,), "'rank' or 'host'"),
    "vhosts": ((int,), "an int"),
}


def option(key):
    """How a message names an option: 'size=/DSM_SIZE'."""
    return "%s=/%s" % (key, _PARSERS[key][0])


def _given(key, value):
    """An init() keyword's value, type-checked; strings parsed as its DSM_*
    variable would be."""
    types, accepts = _ACCEPTS[key]
    if isinstance(value, bool) != (types == (bool,)) or not isinstance(value, types):
        raise ConfigError("init() option %s takes %s, got %s %r"
                          % (option(key), accepts, type(value).__name__, value))
    if not isinstance(value, str):
        return value
    try:
        return _PARSERS[key][1](value)
    except ValueError:
        raise ConfigError("init() option %s takes %s, got %r"
                          % (option(key), accepts, value)) from None


def host_memory():
    """(memory + swap, memory available now) of this host in bytes, from
    /proc/meminfo."""
    fields = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) << 10
    return fields["MemTotal"] + fields.get("SwapTotal", 0), fields["MemAvailable"]


def check_host(size, page_size, ranks_here, memory):
    """Refuse a region this host cannot back: bigger than its memory + swap
    (every page can be touched), or whose page tables (one per rank here)
    would not fit in the memory available.  memory: host_memory()'s pair."""
    backing, available = memory
    if size > backing:
        raise ConfigError("a region of %s (%s) is more than this host can back: %s of "
                          "memory and swap; pass a smaller size= to libdsm.init() or set "
                          "DSM_SIZE lower" % (human(size), option("size"), human(backing)))
    meta = size // page_size * META_BYTES_PER_PAGE
    if meta * ranks_here > available:
        raise ConfigError("a region of %s (%s) needs a page table of %s in each of the %d "
                          "ranks on this host, more than the %s of memory available; pass "
                          "a smaller size= or run fewer ranks here"
                          % (human(size), option("size"), human(meta), ranks_here,
                             human(available)))


def resolve(page_size, environ=None, ranks_here=1, memory=None, **given):
    """Return the checked configuration as a dict.  ranks_here: how many
    ranks of the job run on this host (the spin default depends on it).
    memory: (memory + swap, available) of the host, read when None."""
    environ = os.environ if environ is None else environ
    unknown = set(given) - set(_PARSERS)
    if unknown:
        raise TypeError("init() got unexpected arguments %s" % sorted(unknown))
    cfg = dict(DEFAULTS)
    for key, (var, parse) in _PARSERS.items():
        if given.get(key) is not None:
            cfg[key] = _given(key, given[key])
        elif environ.get(var, "").strip():
            try:
                cfg[key] = parse(environ[var])
            except ValueError:
                raise ConfigError("%s=%r is not valid" % (var, environ[var])) from None
    if cfg["size"] <= 0 or cfg["size"] % page_size:
        raise ConfigError("%s must be a positive multiple of the page size %d, got %d"
                          % (option("size"), page_size, cfg["size"]))
    if cfg["base"] <= 0 or cfg["base"] % page_size:
        raise ConfigError("%s must be a positive multiple of the page size %d, got %#x"
                          % (option("base"), page_size, cfg["base"]))
    npages = cfg["size"] // page_size
    if cfg["block_pages"] is None:
        cfg["block_pages"] = max(1, npages // TARGET_BLOCKS)
    if cfg["block_pages"] < 1:
        raise ConfigError("%s must be at least 1, got %d"
                          % (option("block_pages"), cfg["block_pages"]))
    if not 1 <= cfg["locks"] <= 1 << 24:
        raise ConfigError("%s must be 1..%d, got %d" % (option("locks"), 1 << 24, cfg["locks"]))
    if cfg["spin_us"] is None:
        cfg["spin_us"] = SPIN_US if ranks_here <= (os.cpu_count() or 1) else 0
    if not 0 <= cfg["spin_us"] <= 1_000_000:
        raise ConfigError("%s must be 0..1000000, got %d"
                          % (option("spin_us"), cfg["spin_us"]))
    if cfg["wait"] is None:
        cfg["wait"] = "reply" if 2 * ranks_here <= (os.cpu_count() or 1) else "yield"
    if cfg["wait"] not in WAITS:
        raise ConfigError("%s must be %s, got %r"
                          % (option("wait"), " or ".join(map(repr, WAITS)), cfg["wait"]))
    if not 1 <= cfg["readahead"] <= 4096:
        raise ConfigError("%s must be 1..4096, got %d"
                          % (option("readahead"), cfg["readahead"]))
    if cfg["consistency"] not in CONSISTENCIES:
        raise ConfigError("%s must be %s, got %r"
                          % (option("consistency"), " or ".join(map(repr, CONSISTENCIES)),
                             cfg["consistency"]))
    if cfg["share"] not in SHARES:
        raise ConfigError("%s must be %s, got %r"
                          % (option("share"), " or ".join(map(repr, SHARES)), cfg["share"]))
    if not 1 <= cfg["vhosts"] <= ranks_here:
        raise ConfigError("%s must be 1..%d (the ranks on this host), got %d"
                          % (option("vhosts"), ranks_here, cfg["vhosts"]))
    if not 1 << 20 <= cfg["twin_limit"] <= 1 << 40:
        raise ConfigError("%s must be 1M..1T, got %d"
                          % (option("twin_limit"), cfg["twin_limit"]))
    if cfg["hold_us"] < 0 or cfg["connect_timeout"] <= 0:
        raise ConfigError("%s must be >= 0 and %s > 0, got %r and %r"
                          % (option("hold_us"), option("connect_timeout"), cfg["hold_us"],
                             cfg["connect_timeout"]))
    if not (cfg["heartbeat_s"] == 0 or MIN_HEARTBEAT_S <= cfg["heartbeat_s"] <= MAX_HEARTBEAT_S):
        raise ConfigError("%s must be 0 (off) or %g..%d seconds, got %r"
                          % (option("heartbeat_s"), MIN_HEARTBEAT_S, MAX_HEARTBEAT_S,
                             cfg["heartbeat_s"]))
    check_host(cfg["size"], page_size, ranks_here, host_memory() if memory is None else memory)
    return cfg
