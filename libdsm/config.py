"""Configuration: init() arguments over DSM_* environment variables over
defaults, checked once with messages that say how to fix them.

DSM_SIZE             region bytes; suffixes K, M, G (default 64M)
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
"""
import os

from libdsm.errors import ConfigError

DEFAULTS = {
    "size": 64 << 20,
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
}
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
TARGET_BLOCKS = 4096
CONSISTENCIES = ("sequential", "release")
WAITS = ("reply", "yield")
SPIN_US = 50
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 0.1, 86400


def parse_size(text):
    """'64M' -> 67108864.  Raises ValueError."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    return int(t[:len(t) - len(unit)]) * _UNITS[unit]


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
}


def resolve(page_size, environ=None, ranks_here=1, **given):
    """Return the checked configuration as a dict.  ranks_here: how many
    ranks of the job run on this host (the spin default depends on it)."""
    environ = os.environ if environ is None else environ
    cfg = dict(DEFAULTS)
    for key, (var, parse) in _PARSERS.items():
        if given.get(key) is not None:
            cfg[key] = given[key]
        elif environ.get(var, "").strip():
            try:
                cfg[key] = parse(environ[var])
            except ValueError:
                raise ConfigError("%s=%r is not valid" % (var, environ[var])) from None
    unknown = set(given) - set(_PARSERS)
    if unknown:
        raise TypeError("init() got unexpected arguments %s" % sorted(unknown))
    if cfg["size"] <= 0 or cfg["size"] % page_size:
        raise ConfigError("region size %d must be a positive multiple of the page size %d"
                          % (cfg["size"], page_size))
    if cfg["base"] <= 0 or cfg["base"] % page_size:
        raise ConfigError("region base %#x must be a positive multiple of the page size %d"
                          % (cfg["base"], page_size))
    npages = cfg["size"] // page_size
    if cfg["block_pages"] is None:
        cfg["block_pages"] = max(1, npages // TARGET_BLOCKS)
    if cfg["block_pages"] < 1:
        raise ConfigError("DSM_BLOCK_PAGES must be at least 1, got %d" % cfg["block_pages"])
    if not 1 <= cfg["locks"] <= 1 << 24:
        raise ConfigError("DSM_LOCKS must be 1..%d, got %d" % (1 << 24, cfg["locks"]))
    if cfg["spin_us"] is None:
        cfg["spin_us"] = SPIN_US if ranks_here <= (os.cpu_count() or 1) else 0
    if not 0 <= cfg["spin_us"] <= 1_000_000:
        raise ConfigError("DSM_SPIN_US must be 0..1000000, got %d" % cfg["spin_us"])
    if cfg["wait"] is None:
        cfg["wait"] = "reply" if 2 * ranks_here <= (os.cpu_count() or 1) else "yield"
    if cfg["wait"] not in WAITS:
        raise ConfigError("DSM_WAIT must be %s, got %r" % (" or ".join(map(repr, WAITS)),
                                                          cfg["wait"]))
    if not 1 <= cfg["readahead"] <= 4096:
        raise ConfigError("DSM_READAHEAD must be 1..4096, got %d" % cfg["readahead"])
    if cfg["consistency"] not in CONSISTENCIES:
        raise ConfigError("consistency must be %s, got %r (DSM_CONSISTENCY)"
                          % (" or ".join(map(repr, CONSISTENCIES)), cfg["consistency"]))
    if not 1 << 20 <= cfg["twin_limit"] <= 1 << 40:
        raise ConfigError("DSM_TWIN_LIMIT must be 1M..1T, got %d" % cfg["twin_limit"])
    if cfg["hold_us"] < 0 or cfg["connect_timeout"] <= 0:
        raise ConfigError("DSM_HOLD_US must be >= 0 and DSM_CONNECT_TIMEOUT > 0")
    if not (cfg["heartbeat_s"] == 0 or MIN_HEARTBEAT_S <= cfg["heartbeat_s"] <= MAX_HEARTBEAT_S):
        raise ConfigError("DSM_HEARTBEAT_S must be 0 (off) or %g..%d seconds, got %r"
                          % (MIN_HEARTBEAT_S, MAX_HEARTBEAT_S, cfg["heartbeat_s"]))
    return cfg
