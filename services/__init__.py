"""The launcher's services: spawn and ssh, child processes, I/O multiplexing, network.

In the source tree this is the directory services/; installed, it is the
package ``libdsm_services`` (pyproject.toml maps it; the symlink
libdsm_services -> services makes the same name work from a checkout), so
every import says ``libdsm_services``.  Nothing here imports libdsm
(tests/test_layering.py checks it); libdsm imports the leaf modules
`wire`, `meshwire` and `rankreport` (stdlib only), and `rank` for the
job a rank was started in.
"""
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
NEEDS = ("pexpect", "ptyprocess")
"""What dsmexec needs beyond the standard library (the ranks need libdsm's own)."""


def version():
    """libdsm's version: the one in libdsm/_version.py, read without importing libdsm.

    The file sits beside this package both in the source tree and installed.
    """
    try:
        with open(os.path.join(os.path.dirname(HERE), "libdsm", "_version.py")) as f:
            return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
    except (OSError, AttributeError):
        from importlib import metadata
        return metadata.version("libdsm")


def interpreter_hint():
    """Which interpreter to use instead: the checkout's venv if there is one."""
    venv = os.path.join(os.path.dirname(HERE), ".venv", "bin", "python")
    if os.path.exists(venv):
        return "run it with %s (the venv `make build` made)" % venv
    return "run it with the Python libdsm is installed in (pip install libdsm)"


def main(argv=None):
    """The dsmexec command: check the interpreter, then parse and run (services/cli.py).

    An interpreter without dsmexec's dependencies gets one line that says
    which to use, not a traceback, even for --help.
    """
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        sys.stderr.write("dsmexec: %s has no %s: %s\n" % (sys.executable, " or ".join(missing),
                                                         interpreter_hint()))
        return 1
    from libdsm_services import cli
    return cli.main(argv)
