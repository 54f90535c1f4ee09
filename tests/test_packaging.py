"""What a wheel of the checkout declares and ships, and what `make run` installs."""
import email
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.timeout(120)
SOURCES = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "libdsm", "services"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The names in a wheel built from a copy of the sources, and its METADATA."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        from_ = os.path.join(REPO, name)
        if os.path.isdir(from_):
            shutil.copytree(from_, src / name,
                            ignore=shutil.ignore_patterns("_core*", "__pycache__"))
        else:
            shutil.copy(from_, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", "-w", str(tmp / "out"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (path,) = (tmp / "out").glob("libdsm-*.whl")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return names, email.message_from_bytes(z.read(meta))


def test_wheel_ships_py_typed_and_license(wheel):
    names, _ = wheel
    assert "libdsm/py.typed" in names
    (lic,) = [n for n in names if n.endswith("/LICENSE")]
    assert ".dist-info/" in lic


def test_metadata_is_complete(wheel):
    _, meta = wheel
    assert meta["License-Expression"] == "MIT"
    assert meta["Author"] == "the libdsm developers"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().startswith("# libdsm")        # the README is the description
    assert "distributed shared memory" in meta["Keywords"]
    assert "Typing :: Typed" in meta.get_all("Classifier")
    requires = meta.get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in plain) == ["cffi", "numpy", "pexpect"]
    assert any(r.startswith("ipython") and 'extra == "test"' in r for r in requires), requires


def make_dry_run(target):
    """The commands `make TARGET` would run on a fresh checkout (-B: as if
    nothing were built)."""
    r = subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if "pip install" in line]


def test_make_run_installs_no_test_extras():
    assert make_dry_run("run") == [".venv/bin/python -m pip install -q -e ."]
    assert make_dry_run("test") == [".venv/bin/python -m pip install -q -e '.[test]'"]
