"""The documentation says what the code does, and cites only what a reader can open."""
import importlib.util
import os
import re
import subprocess

from conftest import REPO


def read(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


def paragraphs(text):
    return [p for p in text.split("\n\n") if len(p) > 200]


def test_benchmarks_links_the_analysis_instead_of_repeating_it():
    bench, analysis = read("BENCHMARKS.md"), read("bench/ANALYSIS.md")
    assert not [p for p in paragraphs(analysis) if p in bench]
    assert "](bench/ANALYSIS.md)" in bench
    assert "](../BENCHMARKS.md)" in analysis


def test_make_bench_writes_the_link_that_is_there():
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(REPO, "bench",
                                                                            "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert read("BENCHMARKS.md").endswith("\n".join(run.ANALYSIS_LINK))


def test_analysis_says_who_sends_a_barriers_first_round():
    coll = read("libdsm/csrc/coll.c")
    # coll_begin advances from the calling thread; its first send goes out with tp_send_app.
    assert "advance(cl, 1);" in coll and "tp_send_app(cl->t, rank_at(cl, st->partner)" in coll
    text = " ".join(read("bench/ANALYSIS.md").split())
    assert "The application thread that calls `barrier()` sends the first round itself" in text
    assert "exchanges between the comm threads" not in text


def test_makefile_comments_cite_files_that_exist():
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO,
                             input="wheels/\nbuild/\n", capture_output=True, text=True).stdout
    comments = [line for line in read("Makefile").splitlines() if line.startswith("#")]
    cited = set(re.findall(r"[\w./-]+\.(?:md|py|sh|c|h|toml)\b|[\w.-]+/[\w./-]*", " ".join(comments)))
    missing = [p for p in cited if not os.path.exists(os.path.join(REPO, p))
               and p not in ignored.split()]
    assert cited and not missing, missing


def test_readme_opens_with_the_quick_start():
    readme = read("README.md")
    first = "\n".join(readme.splitlines()[:50])
    opening = first.split("\n\n")[1]
    assert "sequentially consistent by default" in opening
    assert 'consistency="release"' in opening and "option" in opening
    memory = first.split("\n\n")[2]        # which memory a job gets, and its model
    assert 'By default (`share="rank"`)' in memory and "DSM_SHARE=host" in memory
    assert "x86-TSO" in memory
    for needed in ("apt-get install gcc make python3-dev python3-venv", "make run",
                   "homes=\"row_block\"", "dsmexec -n 4 prog.py", "dsmexec -H ",
                   "salloc -n"):
        assert needed in first, needed
    assert readme.index("## Programming") < readme.index("## Performance") \
        < readme.index("## How it works")


def test_docs_cite_no_seed_a_reader_cannot_find():
    for name in ["README.md"] + ["docs/" + f for f in os.listdir(os.path.join(REPO, "docs"))
                                 if f.endswith(".md")]:
        assert not re.search(r"seed 00\d", read(name)), name
