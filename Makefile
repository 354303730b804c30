# The verbs people expect. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install demo test unit lint bench clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## Run the whole pipeline on the local PostgreSQL and RabbitMQ with an embedded SFTP server.
demo: install
	$(BIN)/tlogsync demo

## The whole suite: unit, integration (PostgreSQL, RabbitMQ, OpenSSH sshd) and end-to-end (real workers).
test: install
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache

## Throughput, latency and memory against the one-process baseline (BENCH_FILES, BENCH_SOAK to resize).
bench: install
	$(BIN)/python ops/bench/bench.py
