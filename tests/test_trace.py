"""dsmexec --trace and --stats, and libdsm.plot: on real ranks, and the
launcher-side merging on made-up rank files."""
import json
import os
import subprocess
import sys

import pytest

from dsmrun import ROOT, run
from libdsm_services import report

pytestmark = pytest.mark.timeout(150)
EXAMPLES = os.path.join(ROOT, "examples")


def test_trace_has_a_track_per_rank_with_faults_serves_and_waits(tmp_path):
    out = str(tmp_path / "trace.json")
    p = run(tmp_path, 2, os.path.join(EXAMPLES, "counter_lock.py"), "50",
            opts=("--trace", out))
    assert p.returncode == 0, p.stderr
    with open(out) as f:
        events = json.load(f)["traceEvents"]
    names = {(e["pid"], e["name"]) for e in events}
    for rank in (0, 1):
        assert (rank, "process_name") in names
        assert (rank, "barrier") in names
    assert any(e["name"] == "lock wait" and e["dur"] >= 0 for e in events)
    faults = [e for e in events if e.get("cat") == "fault"]
    assert faults and all({"page", "access", "latency_us"} <= set(e["args"]) for e in faults)
    serves = [e for e in events if e["name"] == "serve"]
    assert serves and all(e["args"]["to"] in (0, 1) for e in serves)
    assert all(e["ts"] >= 0 for e in events if "ts" in e)


def test_stats_prints_a_row_per_rank_and_a_total(tmp_path):
    p = run(tmp_path, 2, os.path.join(EXAMPLES, "sor.py"), "96", "5", opts=("--stats",))
    assert p.returncode == 0, p.stderr
    table = p.stdout[p.stdout.index("dsmexec --stats:"):].splitlines()[1:]
    assert table[0].split()[:4] == ["rank", "host", "read", "f"]
    assert [row.split()[0] for row in table[1:]] == ["0", "1", "all"]
    total = table[-1].split()
    assert int(total[1]) + int(total[2]) > 0          # faults happened


def test_without_the_options_ranks_write_nothing(tmp_path):
    p = run(tmp_path, 2, os.path.join(EXAMPLES, "share.py"))
    assert p.returncode == 0, p.stderr
    assert "dsmexec --stats" not in p.stdout


def _rank_doc(rank, events):
    stats = {k: 0 for k in ("read_faults", "write_faults", "pages_sent", "diff_bytes",
                            "fault_wait_ns", "sync_wait_ns", "lock_wait_ns")}
    stats.update(read_faults=rank + 1, pages_sent=2, fault_wait_ns=3000000)
    return {"rank": rank, "host": "h%d" % rank, "page_size": 4096,
            "clocks": [1000000 + rank * 500, 0], "stats": stats,
            "hot_pages": [[7, 3 + rank], [9, 1]], "events": events, "dropped": 0}


def test_merging_shifts_each_rank_to_wall_clock_and_names_the_events():
    ranks = [_rank_doc(0, [["fault", 2000, 1500, 7, 0, 1]]),
             _rank_doc(1, [["serve", 1000, 0, 7, 0, 0], ["sync", 1000, 4000, "barrier", 1, 0],
                           ["lock", 9000, 100, 5, 1, 0]])]
    doc = report.chrome_trace(ranks)
    real = [e for e in doc["traceEvents"] if e["ph"] != "M"]
    fault, serve, sync, lock = real
    assert fault == {"name": "write fault", "cat": "fault", "ph": "X", "ts": 0.5, "dur": 1.5,
                     "pid": 0, "tid": report.APP_TID,
                     "args": {"page": 7, "access": "write", "latency_us": 1.5}}
    assert (serve["ts"], serve["args"], serve["tid"]) == (0.0, {"page": 7, "to": 0,
                                                             "access": "read"},
                                                       report.COMM_TID)
    assert (sync["name"], lock["name"], lock["args"]) == ("barrier", "lock wait", {"lock": 5})


def test_the_table_sums_ranks_and_merges_hot_pages():
    text = report.stats_table([_rank_doc(0, []), _rank_doc(1, [])])
    rows = [line.split() for line in text.splitlines()[2:]]
    assert rows[0][:3] == ["0", "h0", "1"] and rows[1][:3] == ["1", "h1", "2"]
    assert rows[2][:2] == ["all", "3"]
    assert rows[2][-2:] == ["7:7", "9:2"]
    assert rows[2][4:7] == ["16.0", "KiB", "6.0"]     # the host column is empty


def test_plot_draws_a_png_of_the_transfers(tmp_path):
    pytest.importorskip("matplotlib")
    trace = tmp_path / "t.json"
    doc = report.chrome_trace([_rank_doc(0, [["serve", 10, 0, p, 1, 0] for p in range(20)]),
                               _rank_doc(1, [["serve", 5000, 0, 3, 0, 1]])])
    trace.write_text(json.dumps(doc))
    png = tmp_path / "heat.png"
    p = subprocess.run([sys.executable, "-m", "libdsm.plot", str(trace), "-o", str(png)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "21 page transfers" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rank_that_fails_still_leaves_its_report(tmp_path):
    prog = tmp_path / "fail.py"
    prog.write_text("import libdsm\ndsm = libdsm.init()\ndsm.barrier()\n"
                    "if dsm.rank == 1:\n    raise SystemExit(3)\ndsm.finalize()\n")
    out = tmp_path / "trace.json"
    p = run(tmp_path, 2, str(prog), opts=("--trace", str(out), "--stats"))
    assert p.returncode != 0
    assert "no --trace/--stats report from rank" not in p.stderr, p.stderr
    assert out.exists()
    assert not [d for d in os.listdir(str(tmp_path)) if d.startswith(".dsmexec-report-")]
