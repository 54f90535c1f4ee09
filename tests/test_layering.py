"""Dependencies inside libdsm run one way: the package's face (__init__)
and libdsm.sysv sit on top; no module below imports the package itself
(libdsm.instance & co.), only its sibling modules, and sysv uses nothing
private of the Dsm."""
import ast
import os
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.timeout(30)
PKG = os.path.join(REPO, "libdsm")
TOP = {"__init__.py", "sysv.py"}


def _modules():
    return sorted(f for f in os.listdir(PKG) if f.endswith(".py"))


def _tree(name):
    with open(os.path.join(PKG, name)) as f:
        return ast.parse(f.read(), name)


def upward_imports(tree):
    """Names a module takes from the libdsm package that are not modules."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "libdsm"]
        elif isinstance(node, ast.ImportFrom) and node.module == "libdsm":
            found += [a.name for a in node.names
                      if not os.path.exists(os.path.join(PKG, a.name + ".py"))]
    return found


def test_the_check_sees_an_upward_import():
    assert upward_imports(ast.parse("from libdsm import errors, instance\nimport libdsm")) \
        == ["instance", "libdsm"]


@pytest.mark.parametrize("name", [m for m in _modules() if m not in TOP])
def test_lower_modules_do_not_import_the_package(name):
    assert upward_imports(_tree(name)) == []


def test_sysv_uses_no_private_attribute():
    private = [n.attr for n in ast.walk(_tree("sysv.py"))
               if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and not n.attr.startswith("__")]
    assert private == []


SERVICES = os.path.join(REPO, "services")
LEAVES = ("rankreport.py", "wire.py", "meshwire.py")
"""The launcher's modules libdsm imports: the stdlib and each other only."""


def _imported(path):
    """Every module name a file imports (relative imports as '.')."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module if not node.level else ".")
    return names


def test_the_launcher_and_the_runtime_stay_apart():
    """services/ (libdsm_services) never imports libdsm; the modules libdsm takes
    from it are stdlib-only leaves; the binding imports nothing of the launcher."""
    launcher = sorted(f for f in os.listdir(SERVICES) if f.endswith(".py"))
    assert "cli.py" in launcher and "rankreport.py" in launcher
    for name in launcher:
        bad = [m for m in _imported(os.path.join(SERVICES, name))
               if m == "libdsm" or m.startswith("libdsm.")]
        assert bad == [], "services/%s imports %s" % (name, bad)
    for name in LEAVES:
        leaves = {"libdsm_services." + leaf[:-3] for leaf in LEAVES}
        ours = [m for m in _imported(os.path.join(SERVICES, name))
                if m.split(".")[0] not in sys.stdlib_module_names and m not in leaves]
        assert ours == [], "services/%s is no stdlib-only leaf: it imports %s" % (name, ours)
    binding = _imported(os.path.join(PKG, "_binding.py"))
    assert not [m for m in binding if m.startswith("libdsm_services")], binding
