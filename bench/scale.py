"""Scaling to 16 ranks: barrier, allreduce, contended lock, read fault,
Jacobi and matmul at N = 2, 4, 8 and 16 ranks, each beside its reference
measured in the same run, and the messages each operation costs.

    make bench-scale                  (installs Open MPI and mpi4py first)
    .venv/bin/python bench/scale.py [--ns 2,4,8,16] [--command TEXT]
    bash bench/device.sh              (the 16-core machine, from wheels/)

At every N the job bench/scale_rank.py counts messages (dsm.stats()
around barriers, allreduces, lock rounds and read faults): counts do not
depend on cores, so it runs oversubscribed where N exceeds them.  The timed
rows run only where the machine has N cores (os.sched_getaffinity), and
each beside its reference at the same N:
  barrier, allreduce of 8 doubles   Open MPI over TCP (mpi4py; btl tcp,self,
                                    pml ob1): Barrier, Allreduce
  lock (contended), read fault      the raw C 4 KiB ping-pong between ranks
                                    0 and 1 of the same job, blocking
                                    (reference.pingpong)
  Jacobi, matmul n=1024             the same kernels with mpi4py (mpi_ref.py),
                                    in sequential and in release consistency
  false sharing (false_sharing.py)  release consistency against sequential
Elsewhere a row says "not measured (needs N cores)".  The tables go into
BENCHMARKS.md as the section "Scaling, measured on a C-core machine".
"""
import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run                         # noqa: E402
from scale_rank import plan        # noqa: E402

NS = (2, 4, 8, 16)
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "tcp,self",
          "--mca", "pml", "ob1"]
TIMED = [  # (row of the table, libdsm row, reference row, what the reference is)
    ("barrier", "dsm barrier", "mpi barrier", "Open MPI TCP Barrier"),
    ("allreduce, 8 doubles", "dsm allreduce", "mpi allreduce", "Open MPI TCP Allreduce"),
    ("lock acquire+release, all ranks contending", "dsm lock", "dsm ping-pong",
     "raw C blocking ping-pong"),
    ("read fault, 4 KiB (rank 1 from rank 0)", "dsm read fault", "dsm ping-pong",
     "raw C blocking ping-pong"),
    ("Jacobi 2048², 40 sweeps", "dsm jacobi", "mpi jacobi", "mpi4py"),
    ("matmul n=1024", "dsm matmul", "mpi matmul", "mpi4py"),
    ("Jacobi, release consistency", "dsm jacobi (release)", "mpi jacobi", "mpi4py"),
    ("matmul, release consistency", "dsm matmul (release)", "mpi matmul", "mpi4py"),
    ("false sharing, 1000 rounds of 8-byte slots + barrier, release consistency",
     "false sharing (release)", "false sharing (sequential)", "sequential mode"),
]
RELEASE = ["env", "DSM_CONSISTENCY=release"]


def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_file(tmp, n):
    path = os.path.join(tmp, "machines-%d" % n)
    with open(path, "w") as f:
        f.write("localhost\n" * n)
    return path


ROUNDS = 3
"""Where timed, the libdsm job and the Open MPI job run this often,
alternating; each row gives the median of its rounds (of each field), so
one noisy moment of a shared machine does not decide it."""


def measure(n, timed, tmp, rounds=None):
    """{row: fields} of every job at n ranks."""
    dsm = run.DSMEXEC + [machine_file(tmp, n)]
    rank_job = dsm + [run.bench("scale_rank.py")] + ([] if timed else ["--count-only"])
    rounds = rounds or ROUNDS
    jobs = [rank_job]
    if timed:
        mpi = MPIRUN + ["-n", str(n), run.PY, run.bench("mpi_ref.py")]
        apps = [pre + dsm + [run.bench("apps.py"), kind] for pre in ([], RELEASE)
                for kind in ("jacobi", "matmul")]
        apps += [pre + dsm + [run.bench("false_sharing.py")] for pre in ([], RELEASE)]
        # As many timed barriers and allreduces as scale_rank.py's (its --iters).
        jobs = ([rank_job, mpi + ["barrier", "allreduce", "--iters", "5000"]]
                + apps + [mpi + ["jacobi", "matmul"]]) * rounds
    rows = {}
    for cmd in jobs:
        for fields in run.run_one(cmd):
            name = fields.pop("row")
            name = name if name.endswith(" %d" % n) else "%s %d" % (name, n)
            rows.setdefault(name, []).append(fields)
    return {name: median_fields(runs) for name, runs in rows.items()}


def median_fields(runs):
    """One row from its rounds: the median of each number; the rest (the
    exact message counts) from the first."""
    return {k: statistics.median(r[k] for r in runs) if isinstance(v, float) else v
            for k, v in runs[0].items()}


def result(x):
    if "seconds" in x:
        return "%.3f s" % x["seconds"], x["seconds"]
    return "%s (p99 %s)" % (run.us(x["median_us"]), run.us(x["p99_us"])), x["median_us"]


def timed_table(r, ns, ncores):
    out = ["| N | operation | libdsm, median | reference, same run | ratio |",
           "|---|---|---|---|---|"]
    for n in ns:
        for name, mine, ref, what in TIMED:
            if n > ncores:
                out.append("| %d | %s | not measured (needs %d cores) | — | — |"
                           % (n, name, n))
                continue
            (text, v), (ref_text, ref_v) = result(r["%s %d" % (mine, n)]), \
                result(r["%s %d" % (ref, n)])
            out.append("| %d | %s | %s | %s %s | %.2f× |" % (n, name, text, what,
                                                             ref_text, v / ref_v))
    return out


def count_row(n, name, c):
    """(sent per op per rank, per op in all, plan, hops, check) of one count."""
    per_op = c["msgs_sent"] / c["ops"]
    if name in ("barrier", "allreduce"):
        p, log, sends, hops = plan(n)
        exact = c["per_rank"] == [s * c["ops"] for s in sends]
        return (per_op / n, per_op, "%d×%d%s = %d" % (
            p, log, " + 2×%d" % (n - p) if n != p else "", sum(sends)),
            "%d (log2 %d%s)" % (hops, p, " + 2" if n != p else ""),
            "every rank sends its plan's count" if exact else "**differs from the plan**")
    if name == "lock":
        return (per_op / n, per_op, "≤ 3: ACQ, NEXT, GRANT (none to itself)",
                "1 per hand-off (GRANT)", "yes" if per_op <= 3 else "**more than 3**")
    ok = c["read_faults"] == c["ops"] and round(per_op, 2) == 2.0
    return (per_op / n, per_op, "2: REQ, PAGE (home owns the page)", "2",
            "yes" if ok else "**%d faults, %.2f messages each**" % (c["read_faults"], per_op))


def count_table(r, ns):
    out = ["| N | operation | messages sent per op per rank | messages per op, all ranks "
           "| from the algorithm (P·log2 P + 2(N−P)) | critical-path hops | check |",
           "|---|---|---|---|---|---|---|"]
    for n in ns:
        for name, label in (("barrier", "barrier"), ("allreduce", "allreduce, 8 doubles"),
                            ("lock", "lock acquire+release, contended"),
                            ("read fault", "read fault")):
            per_rank, total, expect, hops, check = count_row(n, name, r["count %s %d" % (name, n)])
            out.append("| %d | %s | %.2f | %.2f | %s | %s | %s |" % (
                n, label, per_rank, total, expect, hops, check))
    return out


def section(r, ns, ncores, command, load, rounds):
    heading = "%s, measured on a %d-core machine" % (run.SCALING, ncores)
    return heading, [
        heading,
        "",
        "Produced by `%s` (`bench/scale.py`) on %s.  Machine: %s; %d cores usable.  "
        "Load average %.2f before the run and %.2f after (other work shares the machine: "
        "compare ratios, each against its reference from the same run)." % (
            command, datetime.date.today().isoformat(), run.machine(), ncores,
            load[0], load[1]),
        "Open MPI: `mpirun --oversubscribe --bind-to none --mca btl tcp,self --mca pml ob1 "
        "-n N`, mpi4py.  "
        "Timings are rank 1's (Open MPI's: rank 0's), medians with p99, each the "
        "median of %d rounds of its job and its reference's, alternating (an "
        "application's round is itself the median of 3 runs)." % rounds,
        "",
    ] + timed_table(r, ns, ncores) + [
        "",
        "Messages, counted with `dsm.stats()` at every N (oversubscribed where the cores "
        "are fewer; counts do not depend on cores).  Barrier and allreduce are recursive "
        "doubling: P the largest power of two ≤ N, log2 P exchanges, plus 2 hops where "
        "N is not a power of two.  The lock is homed on rank 0, every rank taking it "
        "in turn; the read faults are rank 1's, of pages rank 0 homes and owns, with "
        "read-ahead off.",
        "",
    ] + count_table(r, ns) + [""] + ([
        "The timed rows at %s ranks need a machine with that many cores: on the 16-core "
        "machine, `make wheels` here, then `bash bench/device.sh` there (see the script)."
        % ", ".join(str(n) for n in ns if n > ncores), ""] if max(ns) > ncores else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default=",".join(map(str, NS)),
                    help="rank counts, comma-separated (default %(default)s)")
    ap.add_argument("--command", default="make bench-scale",
                    help="the command named in BENCHMARKS.md")
    ap.add_argument("--no-write", action="store_true", help="print the tables only")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="rounds of each timed job (default %(default)s)")
    a = ap.parse_args()
    ns = [int(x) for x in a.ns.split(",")]
    ncores, before = cores(), os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dsm-scale-") as tmp:
        for n in ns:
            rows.update(measure(n, n <= ncores, tmp, a.rounds))
    heading, lines = section(rows, ns, ncores, a.command, (before, os.getloadavg()[0]),
                             a.rounds)
    print("\n".join(lines))
    if not a.no_write:
        run.put_section(heading, lines)
        print("written to BENCHMARKS.md:", shlex.quote(heading))


if __name__ == "__main__":
    main()
