"""Run every benchmark and write BENCHMARKS.md (what `make bench` does).

Each benchmark prints `BENCH {json}` lines; every reference is measured in
the same run, since this machine is noisy.  The table gives the result, its
reference, the ratio and the target of issue 5.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = sys.executable
DSMEXEC = [PY, os.path.join(REPO, "dsmexec.py"), "--no-prefix"]
M2 = os.path.join(REPO, "machine_file.example")
M4, M8 = os.path.join(HERE, "machines-4"), os.path.join(HERE, "machines-8")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "tcp,self",
          "--mca", "pml", "ob1", "--mca", "osc", "pt2pt"]
MPIRUN_SM = ["mpirun", "--oversubscribe", "--bind-to", "none"]
"""Open MPI left to its default transports: shared memory on one host."""
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", MPI4PY_RC_THREAD_LEVEL="serialized")


CHECKPOINT_DIR = os.path.join(tempfile.gettempdir(), "dsm-bench-checkpoint")
"""The checkpoint-to-disk row's directory (bench/checkpoint.py removes it)."""

RELEASE = ["env", "DSM_CONSISTENCY=release"]
"""Prefix of the runs in release consistency."""

APP_ROUNDS = 3
"""The application pairs run this often, DSM and MPI alternating; the table
gives the median of each, so one noisy moment does not decide a row."""


def bench(name):
    return os.path.join(HERE, name)


RUNS = [
    DSMEXEC + [M2, bench("fault_latency.py")],
    DSMEXEC + [M2, bench("sync_latency.py")],
    DSMEXEC + [M4, bench("sync_latency.py")],
    MPIRUN + ["-n", "2", PY, bench("mpi_ref.py"), "barrier"],
    MPIRUN + ["-n", "4", PY, bench("mpi_ref.py"), "barrier"],
    DSMEXEC + [M2, bench("stream.py")],
] + [cmd for _ in range(APP_ROUNDS) for kind in ("jacobi", "matmul", "ep") for cmd in (
    DSMEXEC + [M2, bench("apps.py"), kind],
    RELEASE + DSMEXEC + [M2, bench("apps.py"), kind],
    MPIRUN + ["-n", "2", PY, bench("mpi_ref.py"), kind])] + [
    pre + DSMEXEC + [M4, bench("false_sharing.py")] for pre in ([], RELEASE)] + [
    DSMEXEC + [m, bench("messages.py")] for m in (M2, M4, M8)] + [
    DSMEXEC + [M4, bench("region_init.py")],
    DSMEXEC + [M2, bench("placement.py")],
    ["env", "DSM_SHARE=host", "DSM_VHOSTS=2"] + DSMEXEC + ["-n", "4", bench("placement.py")],
    [PY, bench("launch.py")],
    DSMEXEC + [bench("machines-2hosts"), bench("checkpoint.py"), "buddy"],
    DSMEXEC + ["--checkpoint-dir", CHECKPOINT_DIR, M2, bench("checkpoint.py"), "dir"],
    DSMEXEC + [M2, bench("checkpoint.py"), "jacobi"],
    [PY, bench("restart.py")],
] + [cmd for _ in range(APP_ROUNDS) for kind in ("fill", "jacobi", "matmul") for cmd in (
    DSMEXEC + [M2, bench("hostshm.py"), "dsm", kind],
    [PY, bench("hostshm.py"), "shm", kind],
    MPIRUN_SM + ["-n", "2", PY, bench("hostshm.py"), "mpi", kind])
    if cmd[-1] != "fill" or "mpi" not in cmd] + [
    DSMEXEC + [M2, bench("hostshm.py"), "dsm", "barrier"],
    MPIRUN_SM + ["-n", "2", PY, bench("hostshm.py"), "mpi", "barrier"],
] + [["env", "DSM_SHARE=" + share, "DSM_VHOSTS=" + vhosts] + DSMEXEC + ["-n", "4",
     bench("host_faults.py")] for share, vhosts in (("host", "2"), ("rank", "1"))]


def run_one(cmd, env=ENV, timeout=900):
    """Run one benchmark command, echoing it and its output: its BENCH
    lines' fields, in order.  A failure ends the whole run."""
    print("$", " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c
                        for c in cmd), flush=True)
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    sys.stdout.write("".join(line + "\n" for line in p.stdout.splitlines()
                             if not line.startswith("BENCH ")))
    print("  (%.1f s)" % (time.monotonic() - start))
    sys.stdout.flush()
    if p.returncode:
        sys.stderr.write(p.stderr)
        raise SystemExit("benchmark failed: %s" % " ".join(cmd))
    return [json.loads(line[6:]) for line in p.stdout.splitlines() if line.startswith("BENCH ")]


def collect():
    """{row: fields} from every run."""
    rows = {}
    for cmd in RUNS:
        for fields in run_one(cmd):
            rows.setdefault(fields.pop("row"), []).append(fields)
    return {row: median_of(runs) for row, runs in rows.items()}


def median_of(runs):
    """One row's fields; a row measured several times gets its median seconds."""
    if len(runs) == 1:
        return runs[0]
    return dict(runs[0], seconds=statistics.median(r["seconds"] for r in runs))


def us(x):
    return "%.1f µs" % x


def both_modes(x, show):
    """A reference row's modes, the faster (the reference) first:
    "busy-polling 19.0 µs / blocking 120.0 µs"."""
    modes = sorted(x["modes"], key=lambda m: m != x["mode"])
    return " / ".join("%s %s" % (m, show(x["modes"][m])) for m in modes)


def comm_cpu(x):
    """The comm threads' CPU per page of a fault-path row, if it has them."""
    if "owner_cpu_us" not in x:
        return ""
    return "; comm threads' CPU a page: owner %.1f µs, requester %.1f µs" % (
        x["owner_cpu_us"], x["requester_cpu_us"])


def table(r):
    """Markdown rows: benchmark, result, reference, ratio, target, met."""
    out = []

    def add(name, result, ref, ratio, target, met):
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            name, result, ref, ratio, target, "yes" if met else "**no**"))
    pp = r["ping-pong"]
    ref_pp = "ping-pong, " + both_modes(pp, lambda m: us(m["median_us"]))
    for row, target in (("read fault", 1.5), ("write fault", 2.5), ("upgrade write", 1.5)):
        x = r[row]
        ratio = x["median_us"] / x["ref_us"]
        add("%s, 4 KiB, 2 ranks" % row, "%s (p99 %s)%s" % (
            us(x["median_us"]), us(x["p99_us"]), comm_cpu(x)),
            ref_pp, "%.2f×" % ratio, "≤ %.1f× the faster" % target, ratio <= target)
    for n in (2, 4):
        x, m = r["barrier (%d ranks)" % n], r["mpi barrier %d" % n]
        ratio = x["median_us"] / m["median_us"]
        add("barrier, %d ranks" % n, "%s (p99 %s)" % (us(x["median_us"]), us(x["p99_us"])),
            "Open MPI TCP barrier %s" % us(m["median_us"]), "%.2f×" % ratio, "≤ 1.5×",
            ratio <= 1.5)
    x = r["lock, uncontended (2 ranks)"]
    ratio = x["median_us"] / x["ref_us"]
    add("lock acquire+release, remote home, uncontended", us(x["median_us"]),
        "blocking ping-pong %s" % us(x["ref_us"]), "%.2f×" % ratio, "≤ 1.5×", ratio <= 1.5)
    for n in (2, 4):
        x = r["lock, contended (%d ranks)" % n]
        add("lock acquire+release, contended, %d ranks" % n, us(x["median_us"]),
            "blocking ping-pong %s" % us(x["ref_us"]), "%.2f×" % (x["median_us"] / x["ref_us"]),
            "(information)", True)
    ref_tcp = "loopback TCP, " + both_modes(r["tcp stream"], lambda m: "%.0f MB/s" % m)
    for how, target in (("faults", 0.5), ("prefetch", 0.6)):
        x = r["sequential read 256 MiB (%s)" % how]
        frac = x["mb_s"] / x["ref_mb_s"]
        add("sequential read of 256 MiB owned by another rank (%s)" % how,
            "%.0f MB/s%s" % (x["mb_s"], comm_cpu(x)), ref_tcp, "%.0f%%" % (100 * frac),
            "≥ %.0f%% of the faster" % (100 * target), frac >= target)
    for kind in ("jacobi", "matmul", "ep"):
        d, m = r["dsm " + kind]["seconds"], r["mpi " + kind]["seconds"]
        add("%s, 2 ranks" % kind, "%.3f s" % d, "mpi4py %.3f s" % m, "%.2f×" % (d / m),
            "≤ 1.10×", d / m <= 1.10)
    for kind, target in (("jacobi", 1.05), ("matmul", 1.10), ("ep", 1.10)):
        d, m = r["dsm %s (release)" % kind]["seconds"], r["mpi " + kind]["seconds"]
        add("%s, 2 ranks, release consistency" % kind, "%.3f s" % d, "mpi4py %.3f s" % m,
            "%.2f×" % (d / m), "≤ %.2f×" % target, d / m <= target)
    rel, seq = r["false sharing (release)"]["seconds"], r["false sharing (sequential)"]["seconds"]
    add("false sharing: 4 ranks × 1,000 rounds of 8-byte slots in 4 shared pages + barrier, "
        "release consistency", "%.3f s" % rel, "sequential mode %.3f s" % seq,
        "%.1f× faster" % (seq / rel), "≥ 10× faster", seq / rel >= 10)
    per = [r["messages per fault, %d ranks" % n]["per_fault"] for n in (2, 4, 8)]
    add("messages per fault at 2, 4, 8 ranks", " / ".join("%.2f" % p for p in per), "n/a",
        "n/a", "constant", len(set(round(p, 2) for p in per)) == 1)
    x = r["4 GiB region, 4 ranks: init"]
    add("4 GiB region over 4 ranks", "init %.2f s, %s" % (
        x["seconds"], "works" if x["ok"] else "WRONG DATA"), "default vm.max_map_count",
        "n/a", "works, init < 2 s", x["ok"] and x["seconds"] < 2)
    x = r["own rows, placed"]
    add('%d ranks fill their own rows of a fresh 8 MiB array, homes="row_block"' % x["ranks"],
        "%.1f ms, %d write faults" % (x["seconds"] * 1e3, x["faults"]),
        "round-robin homes %.1f ms, %d write faults" % (x["ref_seconds"] * 1e3, x["ref_faults"]),
        "%.1f× faster" % (x["ref_seconds"] / x["seconds"]), "no write fault, faster",
        x["faults"] == 0 and x["seconds"] < x["ref_seconds"])
    x = r["own rows, placed, across hosts"]
    add('2 virtual hosts × 2 ranks (host-shared) fill their own rows of a fresh 8 MiB array, '
        'homes="row_block"', "%d write faults" % x["faults"],
        "round-robin homes over the leaders: %d write faults" % x["ref_faults"], "n/a",
        "no write fault", x["faults"] == 0 and x["ref_faults"] > 0)
    x = r["launch 8 ranks via ssh"]
    add("launch of 8 ranks through ssh", "%.2f s" % x["seconds"],
        "one serial ssh %.2f s" % x["ref_seconds"], "%.1f×" % (x["seconds"] / x["ref_seconds"]),
        "≤ 1.5 s", x["seconds"] <= 1.5)
    checkpoint_rows(r, add)
    host_rows(r, add)
    host_fault_rows(r, add)
    return out


def host_rows(r, add):
    """The rows of bench/hostshm.py: 2 ranks on one host in host-shared
    memory (DSM_SHARE=host, issue 20)."""
    x, s = r["host fill"], r["shm fill"]
    ratio = x["seconds"] / s["seconds"]
    add("2 ranks on one host fill their rows of a fresh 64 MiB array, a barrier, rank 0 "
        "sums it (host-shared)", "%.3f s (first round %.3f s), %d faults" % (
            x["seconds"], x["first_seconds"], x["faults"]),
        "multiprocessing.shared_memory %.3f s (first %.3f s)" % (
            s["seconds"], s["first_seconds"]),
        "%.2f×" % ratio, "≤ 1.1×, 0 faults", ratio <= 1.1 and x["faults"] == 0)
    x, m = r["host barrier"], r["mpi-sm barrier 2"]
    ratio = x["median_us"] / m["median_us"]
    add("barrier, 2 ranks on one host (host-shared)",
        "%s (p99 %s)" % (us(x["median_us"]), us(x["p99_us"])),
        "Open MPI default (shared-memory) barrier %s" % us(m["median_us"]),
        "%.2f×" % ratio, "≤ 3×", ratio <= 3)
    for kind in ("jacobi", "matmul"):
        d = r["host " + kind]["seconds"]
        for ref, what, target in (("shm", "multiprocessing.shared_memory", 1.05),
                                  ("mpi-sm", "mpi4py, default transports", 1.0)):
            m = r["%s %s" % (ref, kind)]["seconds"]
            add("%s, 2 ranks on one host (host-shared)" % kind, "%.3f s" % d,
                "%s %.3f s" % (what, m), "%.2f×" % (d / m), "≤ %.2f×" % target,
                d / m <= target)


def host_fault_rows(r, add):
    """The rows of bench/host_faults.py: read faults across 2 virtual hosts
    x 2 ranks in host-shared memory, per-rank mode the reference (issue 20)."""
    for order, who in (("leader", "the leader reads first, then the other rank"),
                       ("other", "the other rank reads first, then the leader")):
        x, ref = r["faults across hosts host " + order], r["faults across hosts rank " + order]
        add("2 virtual hosts × 2 ranks (host-shared), read faults on pages the other host "
            "holds: %s" % who,
            "%.2f messages a fault (%.2f between hosts); each page crossed %.2f times%s" % (
                x["per_fault"], x["between_per_fault"], x["crossings"],
                ", %d rows WRONG" % x["bad"] if x["bad"] else ""),
            "per-rank mode: %.2f messages a fault; each page crossed %.2f times" % (
                ref["per_fault"], ref["crossings"]),
            "n/a", "2 messages a fault; a page crosses once",
            x["per_fault"] <= 2 and x["crossings"] == 1 and not x["bad"])


def checkpoint_rows(r, add):
    """The rows of bench/checkpoint.py and bench/restart.py (issue 22)."""
    for row, what, ref, target in (
            ("checkpoint, buddy memory", "checkpoint of %d MiB over 2 ranks, buddy memory",
             "memcpy + loopback TCP stream of it", 2.0),
            ("checkpoint, directory", "checkpoint of %d MiB over 2 ranks to a directory on "
             "local disk", "os.write + fsync of it", 1.5)):
        x = r[row]
        ratio = x["seconds"] / x["ref_seconds"]
        add(what % x["mib"], "%.3f s" % x["seconds"], "%s %.3f s" % (ref, x["ref_seconds"]),
            "%.2f×" % ratio, "≤ %.1f×" % target, ratio <= target)
    x = r["jacobi with checkpoints"]
    ratio = x["seconds"] / x["ref_seconds"]
    add("jacobi 2048², 2 ranks, a checkpoint every 10 sweeps (buddy memory)",
        "%.3f s" % x["seconds"], "without checkpoints %.3f s" % x["ref_seconds"],
        "%.2f×" % ratio, "≤ 1.10×", ratio <= 1.10)
    x = r["restart from buddy memory"]
    add("restart after a SIGKILLed rank, %d MiB from buddy memory" % x["mib"],
        "%.2f s" % x["seconds"], "heartbeat (DSM_HEARTBEAT_S=1) + reading the bytes back "
        "%.2f s" % x["ref_seconds"], "%+.2f s" % (x["seconds"] - x["ref_seconds"]),
        "≤ that + 2 s", x["seconds"] <= x["ref_seconds"] + 2)


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return "%s, %d vCPUs, Linux %s, Python %s" % (cpu, os.cpu_count(), platform.release(),
                                                  platform.python_version())


SCALING = "## Scaling"
"""The heading every section of bench/scale.py starts with."""


def sections(text):
    """text cut at its "## " headings: [(heading or "", body lines)]."""
    out = [("", [])]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append((line, []))
        out[-1][1].append(line)
    return out


def scaling_sections():
    """The lines of BENCHMARKS.md's scaling sections, which `make bench`
    keeps (only `make bench-scale` writes them)."""
    path = os.path.join(REPO, "BENCHMARKS.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for head, body in sections(f.read()) if head.startswith(SCALING)
                for line in body]


def put_section(heading, lines):
    """Write BENCHMARKS.md with the section `heading` replaced by lines (its
    heading first), or added after the last scaling section, else before
    "Where the time goes"."""
    path = os.path.join(REPO, "BENCHMARKS.md")
    with open(path) as f:
        parts = sections(f.read())
    heads = [h for h, _ in parts]
    if heading in heads:
        parts[heads.index(heading)] = (heading, lines)
    else:
        after = [i for i, h in enumerate(heads) if h.startswith(SCALING)]
        at = after[-1] + 1 if after else next(
            (i for i, h in enumerate(heads) if h.startswith("## Where")), len(parts))
        parts.insert(at, (heading, lines))
    with open(path, "w") as f:
        f.write("\n".join(line for _, body in parts for line in body) + "\n")


# The analysis lives in bench/ANALYSIS.md, written by hand; this file links to it.
ANALYSIS_LINK = [
    "## Where the time goes",
    "",
    "Why each row is where it is, what was measured to find out and what would "
    "close the gaps: [bench/ANALYSIS.md](bench/ANALYSIS.md).",
    "",
]


def main():
    rows = collect()
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (which runs `bench/run.py`) on %s." % (
            datetime.date.today().isoformat()),
        "Machine: %s.  Every reference was measured in the same run: the machine is a "
        "shared VM and absolute numbers move by tens of percent from run to run; the "
        "ratios are what to compare.  The raw C ping-pong and TCP stream each run "
        "blocking and busy-polling (MSG_DONTWAIT in a loop); the fault-path rows are "
        "against the faster of the two, and give the CPU the comm threads of the owner "
        "(rank 0) and of the reading rank (1) spent per page." % machine(),
        "",
        "| benchmark | result (median) | reference, same run | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ] + table(rows) + [
        "",
        "Each benchmark can be run alone; the commands are in the scripts' docstrings "
        "and in `bench/run.py`.",
        "",
    ]
    lines += scaling_sections()                            # bench/scale.py's, kept
    lines += ANALYSIS_LINK
    with open(os.path.join(REPO, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
