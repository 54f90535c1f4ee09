"""cffi build script (API mode): the declarations are csrc/dsm_api.h as it is.

`setup.py` names this module in `cffi_modules`; `pip install -e .` runs it.
"""
import os

import cffi

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
C_FILES = ["core.c", "region.c", "fault.c", "coherence.c", "comm.c", "sync.c", "net.c"]

ffibuilder = cffi.FFI()
with open(os.path.join(CSRC, "dsm_api.h")) as f:
    ffibuilder.cdef(f.read())
ffibuilder.set_source(
    "libdsm._core",
    '#include "internal.h"\n',
    # setuptools wants sources relative to the project root
    sources=[os.path.relpath(os.path.join(CSRC, c)) for c in C_FILES],
    include_dirs=[CSRC],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-pthread"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
