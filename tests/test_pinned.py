"""dsm.pinned and the system-call helpers on it (save, write, readinto)
under real ranks, and the pin protocol's guarantees."""
import re

import pytest

from dsmrun import ROOT, rank_lines, run, run_code

pytestmark = pytest.mark.timeout(60)
PINNED_PROG = ROOT + "/tests/pinned_prog.py"


def test_64_mib_through_each_helper_while_other_ranks_hold_the_pages(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    p = run(tmp_path, 3, PINNED_PROG, "io", "--mib", "64", "--dir", str(out),
            env={"DSM_SIZE": "256M"})
    assert p.returncode == 0, p.stderr
    line = rank_lines(p.stdout, "io save")[0]
    assert line == ("io save=1 write_fd=1 write_file=1 readinto_fd=1 readinto_file=1 "
                    "coherent=1 eof=1"), p.stdout
    assert "io files=['data', 'data.npy']" in p.stdout      # no temporary file left


def test_a_pinned_page_is_not_given_away_until_unpinned(tmp_path):
    p = run(tmp_path, 2, PINNED_PROG, "holds")
    assert p.returncode == 0, p.stderr
    assert "holds during=1 after=2" in p.stdout, p.stdout


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_pinning_each_others_pages_do_not_deadlock(tmp_path, n):
    p = run(tmp_path, n, PINNED_PROG, "mutual", "--rounds", "40")
    assert p.returncode == 0, p.stderr
    got = rank_lines(p.stdout, "mutual counts")
    assert got == {r: "mutual counts=[%d]" % (40 * n) for r in range(n)}, p.stdout


def test_nested_pins_on_each_others_pages_time_out(tmp_path):
    p = run(tmp_path, 2, PINNED_PROG, "timeout")
    assert p.returncode == 0, p.stderr
    assert re.search(r"timeout rank 0: rank 0 on host localhost: page \d+ did not come "
                     r"within the timeout: another rank holds it pinned", p.stdout), p.stdout
    assert "timeout rank 1 got it" in p.stdout


def test_helpers_leave_no_partial_file(tmp_path):
    # A file-size limit makes the writes fail half way (EFBIG).
    code = """if 1:
        import os, resource, signal, libdsm
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        d = libdsm.init(size=4 << 20)
        arr = d.array(1 << 20, "uint8")
        arr[:] = 7
        d.save(%(dir)r + "/ok", arr)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))
        for what in ("save", "write"):
            try:
                if what == "save":
                    d.save(%(dir)r + "/big.npy", arr)
                else:
                    fd = os.open(%(dir)r + "/big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
                    os.write(fd, b"x" * 10)
                    try:
                        d.write(fd, arr)
                    finally:
                        os.close(fd)
                print(what, "no error")
            except OSError as e:
                print(what, "raised", e.errno)
        print("files", sorted(os.listdir(%(dir)r)), os.path.getsize(%(dir)r + "/big.bin"))
        try:
            d.write(1, arr[::2])
        except ValueError as e:
            print("strided:", e)
        import io
        a = d.malloc(10000)
        a.mem[:] = b"a" * 10000
        d.create_region("r", 5000)
        r = d.map_region("r")
        r.mem[:] = b"r" * 5000
        buf = io.BytesIO()
        d.write(buf, a)
        d.write(buf, r)
        with d.pinned(r.mem[100:200], write=True, timeout=None):
            pass
        print("bytesio", buf.getvalue() == b"a" * 10000 + b"r" * 5000)
        buf.seek(0)
        d.readinto(buf, r)
        print("readinto bytesio", bytes(r.mem) == b"a" * 5000)
        d.unmap_region(r)
        d.finalize()
    """ % {"dir": str(tmp_path)}
    p = run_code(code)
    assert p.returncode == 0, p.stderr
    # np.save's own OSError carries no errno ("requested and N written")
    assert "save raised" in p.stdout and "write raised 27" in p.stdout, p.stdout
    assert "files ['big.bin', 'ok.npy'] 10" in p.stdout, p.stdout
    assert "strided: write and readinto need C-contiguous memory" in p.stdout
    assert "bytesio True" in p.stdout and "readinto bytesio True" in p.stdout, p.stdout
