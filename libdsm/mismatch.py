"""What each rank called, so that a CollectiveError names the difference.

Every collective describes itself: the public call the program made
(`allreduce`, `array`, found on the stack), where (file:line), and the
arguments that must agree (root, op, dtype, shape).  The description's
hash goes with the collective into the C core, which finds ranks that
disagree; they then all exchange their descriptions and say which of
these differs, on which ranks.  When a rank finalized instead, the C core
says so, and only the call this rank made is named.
"""
import os
import re
import sys
import zlib

_PKG = os.path.dirname(os.path.abspath(__file__))
KEYS = ("call", "root", "op", "dtype", "shape")
_FINALIZED = re.compile(r"rank (\d+) called finalize\(\)")
_ROOTED = ("bcast", "reduce", "gather", "scatter")
_inside = {}                        # code file name -> is it libdsm's? (a cache)


def _ours(filename):
    if filename not in _inside:
        _inside[filename] = os.path.abspath(filename).startswith(_PKG + os.sep)
    return _inside[filename]


def describe(**args):
    """This rank's description of the collective it is making: args (root,
    op, dtype, shape as they apply) and the public call and its site."""
    frame, outer = sys._getframe(1), None
    while frame is not None and _ours(frame.f_code.co_filename):
        outer, frame = frame, frame.f_back
    call = outer.f_code.co_name if outer is not None else "?"
    desc = {k: v for k, v in args.items() if v is not None}
    desc["call"] = "finalize" if call == "__exit__" else call
    desc["site"] = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None
    return desc


def _site(desc):
    """Where the call was made: file:line."""
    return "%s:%d" % (os.path.basename(desc["site"][0]), desc["site"][1]) if desc["site"] \
        else "?"


def sig(desc):
    """The 64-bit hash of what must agree between ranks."""
    return zlib.crc32(repr([desc.get(k) for k in KEYS]).encode())


def render(desc):
    """allreduce(op='sum'), bcast(root=0), array(), ...: the arguments of
    the public call (not those of a collective inside it, as array's bcast)."""
    shown = ("op", "root") if desc["call"] in _ROOTED else ("op",)
    args = ", ".join("%s=%r" % (k, desc[k]) for k in shown if k in desc)
    return "%s(%s)" % (desc["call"], args)


def ranks(which):
    """'rank 1' or 'ranks 1, 2'."""
    return ("rank %d" if len(which) == 1 else "ranks %s") % (
        which[0] if len(which) == 1 else ", ".join(map(str, which)))


def explain(descs):
    """The first of KEYS on which the ranks' descriptions (a list by rank)
    differ, said as a sentence; None if they agree."""
    for key in KEYS:
        groups = {}
        for rank, d in enumerate(descs):
            groups.setdefault(repr(d.get(key)), []).append(rank)
        if len(groups) > 1:
            break
    else:
        return None
    parts = []
    for group in groups.values():
        d = descs[group[0]]
        if key == "call":
            parts.append("%s called %s at %s" % (ranks(group), render(d), _site(d)))
        else:
            parts.append("%s on %s" % (_value(key, d.get(key)), ranks(group)))
    if key == "call":
        return "ranks called different collectives: " + "; ".join(parts)
    what = {"root": "roots", "op": "ops", "dtype": "dtypes", "shape": "shapes"}[key]
    return "ranks passed different %s to %s: %s" % (what, descs[0]["call"], ", ".join(parts))


def _value(key, v):
    if v is None:
        return "no %s" % key
    return "%s=%r" % (key, v) if key in ("root", "op") else str(v)


def finalizing(text, desc, rank):
    """The C core's text when another rank finalized, said with the call
    this rank made; None if text is not about a finalize."""
    m = _FINALIZED.search(text)
    if not m or int(m.group(1)) == rank:
        return None
    return "rank %d called %s at %s while rank %s was finalizing" % (
        rank, render(desc), _site(desc), m.group(1))
