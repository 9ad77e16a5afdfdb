# The commands the README names. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: install test test-slow test-browser test-all demo bleu-gate bench clean

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch would pull a CUDA build and GBs of GPU libraries.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[test,optuna]'
	touch $@

test: install
	$(BIN)/ruff check seq2seq tests benchmarks
	$(BIN)/python -m pytest -q --durations=15

# The slow tests, which CI runs besides `make test`: end-to-end training runs of 20 s and more
# (resumption after SIGKILL, determinism, DDP, workers, Ctrl-C, ...), an Optuna sweep of 2 trials,
# and the end-to-end CLI tests run with the commands of a wheel installed in a fresh virtualenv.
test-slow: install
	$(BIN)/python -m pytest -q --durations=10 -m "slow and not gpu and not browser"

# The web page of seq2seq-serve in headless Chromium (needs: apt-get install chromium chromium-driver).
test-browser: install
	$(BIN)/python -m pytest -q -m browser

test-all: install
	$(BIN)/python -m pytest -q -m ""

# Multi30k de->en for 2 epochs (about 5 minutes on 2 cores), then BLEU and sample translations
# of test_2016_flickr. Epochs, not minutes, so a busy machine gets the same model, only later.
# Uses $$SEQ2SEQ_DATA when set, else downloads into ./data.
demo: install
	$(BIN)/seq2seq-train experiment=multi30k_de_en trainer.max_epochs=2 hydra.run.dir=outputs/demo

# What CI runs after the tests: a short Multi30k run must clear a BLEU floor. The run is a
# fixed number of steps (about 3 epochs, 6 minutes on 2 cores), not a fixed time, so a slow or
# busy machine trains the same model and scores the same BLEU; a model that does not learn
# scores near 0. Not fewer steps: the first epoch's progress depends on the random stream
# (validation loss after 649 steps from 3.65 to 4.11 across seeds and dropout streams), and at
# 1,000 steps test BLEU ranged from 12.4 to 24.7; at 2,000 a slow starter scored 25.9.
BLEU_GATE_STEPS ?= 2000
BLEU_FLOOR ?= 15
bleu-gate: install
	$(BIN)/seq2seq-train experiment=multi30k_de_en trainer.max_steps=$(BLEU_GATE_STEPS) \
		evaluate_test=false trainer.enable_progress_bar=false hydra.run.dir=outputs/bleu-gate
	$(BIN)/seq2seq-evaluate model=outputs/bleu-gate/model src=test_2016_flickr.de ref=test_2016_flickr.en \
		beam=5 min_bleu=$(BLEU_FLOOR) json=outputs/bleu-gate/test_scores.json

# Throughput against this machine's matmul rate, and decoding speed with BLEU; writes
# benchmarks/results/latest.json. Decodes with BENCH_MODEL: the full recipe model when it is
# there, else the bleu-gate one (make bleu-gate), else it skips decoding.
BENCH_MODEL ?= $(firstword $(wildcard benchmarks/results/runs/full/model outputs/bleu-gate/model))
bench: install
	$(BIN)/python benchmarks/throughput.py $(if $(BENCH_MODEL),--model $(BENCH_MODEL)) \
		--out benchmarks/results/latest.json

clean:
	rm -rf $(VENV) outputs multirun .cache *.egg-info
