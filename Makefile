# Two commands on a fresh machine: `make demo` (install + a small comparison) and
# `make test`. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build this project is tested with (x86_64; pip takes it from the local cache
# where one exists). Override e.g. TORCH="torch==2.9.1 torchvision==0.24.1" on aarch64.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/debiasbench sweep benchmarks/demo.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-columns=median,iqr,rounds

clean:
	rm -rf $(VENV) .debiasbench .benchmarks
