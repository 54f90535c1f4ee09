"""An installed libdsm: a wheel of this checkout in a fresh venv, used from outside the tree.

The wheel is built from a copy of the sources (no build/ left in the
checkout) without network: the build and the runtime dependencies come
from the test's own environment, which the fresh venv sees through a
.pth line (that adds its site-packages, not its editable install).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO, machine_file

pytestmark = pytest.mark.timeout(120)
SOURCES = ["pyproject.toml", "setup.py", "README.md", "libdsm", "services"]
PROG = """\
import libdsm, libdsm_services
with libdsm.init() as dsm:
    print("rank", dsm.rank, "of", dsm.size, libdsm.__file__.startswith(%r),
          libdsm_services.__file__.startswith(%r))
"""


def run(argv, cwd, **kw):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv directory, wheel path): this checkout installed in a fresh venv."""
    tmp = tmp_path_factory.mktemp("install")
    src, wheels, venv = tmp / "src", tmp / "wheels", tmp / "venv"
    src.mkdir()
    skip = shutil.ignore_patterns("_core*", "__pycache__")
    for name in SOURCES:
        from_ = os.path.join(REPO, name)
        if os.path.isdir(from_):
            shutil.copytree(from_, src / name, ignore=skip)
        else:
            shutil.copy(from_, src / name)
    r = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "--no-index", "-w", str(wheels), str(src)], tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = wheels.glob("libdsm-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, check=True)
    site = run([str(venv / "bin" / "python"), "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    r = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
             "-q", "--no-deps", "--no-index", str(wheel)], tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv, wheel, site


def env():
    """No checkout on the path: what a user outside the tree has."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_no_top_level_services_package(installed):
    _, wheel, site = installed
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"libdsm", "libdsm_services", wheel.name.split("-")[0] + "-" +
                    wheel.name.split("-")[1] + ".dist-info"}
    assert not os.path.exists(os.path.join(site, "services"))


def test_dsmexec_version_and_module_help(installed, tmp_path):
    venv, _, _ = installed
    r = run([str(venv / "bin" / "dsmexec"), "--version"], tmp_path, env=env())
    assert r.returncode == 0, r.stderr
    from libdsm._version import __version__
    assert r.stdout.splitlines()[0] == "dsmexec %s" % __version__
    r = run([str(venv / "bin" / "python"), "-m", "libdsm.run", "--help"], tmp_path, env=env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: dsmexec")


def test_a_two_rank_job_from_outside_the_tree(installed, tmp_path):
    venv, _, site = installed
    prog = tmp_path / "prog.py"
    prog.write_text(PROG % (site, site))
    hosts = machine_file(tmp_path, "localhost", "localhost")
    r = run([str(venv / "bin" / "dsmexec"), hosts, str(prog)], tmp_path, env=env())
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[rank 0] rank 0 of 2 True True",
                                             "[rank 1] rank 1 of 2 True True"]


def test_the_wrong_interpreter_gets_one_line(tmp_path):
    """A Python without pexpect (here: ours with -S, no site-packages) is told which to use."""
    r = run([sys.executable, "-S", os.path.join(REPO, "dsmexec.py"), "--help"], tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("dsmexec: %s has no pexpect" % sys.executable)
    assert ".venv/bin/python" in r.stderr or "installed" in r.stderr
