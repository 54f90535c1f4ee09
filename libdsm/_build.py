"""cffi build script (API mode): the declarations are csrc/dsm_api.h as it is.

`setup.py` names this module in `cffi_modules`; `pip install -e .` runs it.
The package version (libdsm/_version.py) is stamped into the compiled core,
and `_binding` checks the stamp at import.  DSM_RING_CAP=n in the
environment builds a core whose ring to the comm thread holds n messages
(the tests build a tiny one to drive the ring-full path).  DSM_LOCKCHECK=1
builds a core that checks the lock order of ground.h at every take.
"""
import os
import re

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
C_FILES = ["ground.c", "wire.c", "ring.c", "region.c", "transport.c", "comm.c", "peer.c",
           "net.c", "coh.c", "coh_app.c", "coh_serve.c", "coh_sc.c", "coh_rc.c", "coh_twin.c",
           "coh_rchost.c", "coh_pin.c", "coh_place.c", "coh_host.c", "coll.c", "reduce.c",
           "locks.c", "mbox.c", "ops.c", "ops_mode.c",
           "hostmem.c", "hostsync.c", "hostcoll.c", "hostlock.c", "hostmbox.c", "trace.c", "commstep.c",
           "route.c", "fault.c", "waitsig.c", "api.c"]


def package_version():
    with open(os.path.join(HERE, "_version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def macros():
    defs = [("DSM_BUILD_VERSION", '"%s"' % package_version())]
    if os.environ.get("DSM_RING_CAP"):
        defs.append(("DSM_RING_CAP", str(int(os.environ["DSM_RING_CAP"]))))
    if os.environ.get("DSM_LOCKCHECK"):
        defs.append(("DSM_LOCKCHECK", "1"))
    return defs


ffibuilder = cffi.FFI()
with open(os.path.join(CSRC, "dsm_api.h")) as f:
    ffibuilder.cdef(f.read())
ffibuilder.set_source(
    "libdsm._core",
    '#include "dsm_api.h"\n',
    # setuptools wants sources relative to the project root
    sources=[os.path.relpath(os.path.join(CSRC, c)) for c in C_FILES],
    include_dirs=[CSRC],
    define_macros=macros(),
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
