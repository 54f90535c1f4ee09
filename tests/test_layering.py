"""Dependencies inside libdsm run one way: the package's face (__init__)
and libdsm.sysv sit on top; no module below imports the package itself
(libdsm.instance & co.), only its sibling modules, and sysv uses nothing
private of the Dsm."""
import ast
import os

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
