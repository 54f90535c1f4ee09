"""A picture of a `dsmexec --trace` file: which pages moved when, to whom.

    python -m libdsm.plot trace.json -o heat.png

Every page a comm thread served is a dot at (time, page), coloured by the
rank it went to: bands of one colour are pages that stay with their
users; stripes that change colour are pages the ranks pass back and forth
(false sharing, or a real producer and consumer).  Needs matplotlib:
``pip install libdsm[plot]``.
"""
import argparse
import json
import sys


def transfers(trace):
    """(ms, page, to rank) of every page served in a trace document."""
    return [(e["ts"] / 1000.0, e["args"]["page"], e["args"]["to"])
            for e in trace["traceEvents"] if e.get("name") == "serve"]


def heat_map(trace, out, title=None):
    """Draw the transfers of a trace document into the PNG file `out`."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("libdsm.plot needs matplotlib: pip install libdsm[plot]") from None
    moves = transfers(trace)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    cmap = plt.get_cmap("tab10")
    for rank in sorted({to for _, _, to in moves}):
        pts = [(t, p) for t, p, to in moves if to == rank]
        ax.scatter([t for t, _ in pts], [p for _, p in pts], s=4, marker="s", linewidths=0,
                   color=cmap(rank % 10), label="to rank %d" % rank)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("page")
    ax.set_title(title or "page transfers: %d pages moved" % len(moves))
    if moves:
        ax.legend(loc="upper right", markerscale=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return len(moves)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m libdsm.plot",
                                description="Heat map of the page transfers in a "
                                "dsmexec --trace file (page against time, by rank).")
    p.add_argument("trace", help="the JSON file dsmexec --trace wrote")
    p.add_argument("-o", "--output", default="heat.png", help="PNG to write (heat.png)")
    p.add_argument("--title", help="the picture's title")
    a = p.parse_args(argv)
    with open(a.trace) as f:
        trace = json.load(f)
    n = heat_map(trace, a.output, a.title)
    sys.stdout.write("%s: %d page transfers\n" % (a.output, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
