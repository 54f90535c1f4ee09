# Two commands set up a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCES := pyproject.toml setup.py libdsm/_build.py $(wildcard libdsm/csrc/*.c libdsm/csrc/*.h)

.PHONY: run test bench build clean

run: $(STAMP)
	$(VPY) dsmexec.py machine_file.example examples/double_touch.py

test: $(STAMP)
	$(VPY) -m pytest

# The reference peers: Open MPI from Debian, mpi4py into the venv.
bench: $(STAMP)
	command -v mpirun >/dev/null || { apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev; }
	$(VPY) -c 'import mpi4py' 2>/dev/null || $(VPY) -m pip install -q mpi4py
	$(VPY) bench/run.py

build: $(STAMP)

# An editable install builds the cffi extension next to its sources.
$(STAMP): $(SOURCES)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info libdsm/_core*.so libdsm/_core.c libdsm/_core.o
