"""Dependencies inside libdsm run one way: the package's face (__init__)
and libdsm.sysv sit on top; no module below imports the package itself
(libdsm.instance & co.), only its sibling modules, and sysv uses nothing
private of the Dsm.  In the C core, the calls between files (read from
each object's defined and undefined symbols) have no circle and go down
the layers ground.h lists."""
import ast
import os
import re
import subprocess
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


# ---------------------------------------------------------------- the C core's calls

CSRC = os.path.join(PKG, "csrc")


def ground_layers():
    """The layer of each C file, from the list in ground.h's opening comment
    (a file named there without "layer N" is the ground, layer 0)."""
    with open(os.path.join(CSRC, "ground.h")) as f:
        head = f.read().split("*/", 1)[0]
    return {name: int(layer or 0)
            for name, layer in re.findall(r"^ \*\s+(\w+\.c)\s+(?:layer (\d):)?", head, re.M)}


def call_graph(objects):
    """File -> {file it calls into: [symbols]}, from the symbols each object
    defines and leaves undefined (nm)."""
    defined, wanted = {}, {}
    for name, obj in objects.items():
        wanted[name] = set()
        for line in subprocess.run(["nm", obj], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in "TDBRC":
                defined[fields[2]] = name
            elif len(fields) == 2 and fields[0] == "U":
                wanted[name].add(fields[1])
    graph = {name: {} for name in objects}
    for name, syms in wanted.items():
        for sym in sorted(syms):
            if defined.get(sym, name) != name:
                graph[name].setdefault(defined[sym], []).append(sym)
    return graph


def cycle(graph):
    """A call circle as a list of files, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        found = node not in state and visit(node, [node])
        if found:
            return found
    return None


def test_the_cycle_check_sees_a_circle():
    assert cycle({"a.c": {"b.c": ["f"]}, "b.c": {"a.c": ["g"]}}) == ["a.c", "b.c", "a.c"]
    assert cycle({"a.c": {"b.c": ["f"]}, "b.c": {}}) is None


@pytest.fixture(scope="module")
def c_calls(tmp_path_factory):
    out = tmp_path_factory.mktemp("objects")
    objects = {}
    for name in sorted(f for f in os.listdir(CSRC) if f.endswith(".c")):
        obj = str(out / (name + ".o"))
        subprocess.run(["cc", "-c", "-O0", "-I", CSRC, "-o", obj, os.path.join(CSRC, name)],
                       check=True)
        objects[name] = obj
    return call_graph(objects)


def test_every_c_file_is_in_ground_h_s_list(c_calls):
    assert sorted(ground_layers()) == sorted(c_calls)


def test_c_calls_have_no_circle(c_calls):
    assert cycle(c_calls) is None, "call circle: %s" % " -> ".join(cycle(c_calls))


def test_c_calls_go_down_the_layers(c_calls):
    layers = ground_layers()
    up = ["%s (layer %d) calls %s in %s (layer %d)" % (a, layers[a], ", ".join(syms), b, layers[b])
          for a, callees in c_calls.items() for b, syms in callees.items()
          if layers[b] > layers[a]]
    assert up == []
