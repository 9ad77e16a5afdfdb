# The commands the README names. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: install test test-slow test-browser test-container test-all demo bleu-gate bench gpu-check web-runtime clean

install: $(VENV)/.installed

# torch first and pinned: an unpinned torch would pull a CUDA build and GBs of GPU libraries.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[test,optuna]'
	touch $@

# Two pytest-xdist workers: much of the suite waits on interpreters starting (the commands run
# as real processes), so two workers keep both cores busy. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

test: install
	$(BIN)/ruff check seq2seq tests benchmarks
	$(PYTEST) --durations=20

# The slow tests, which CI runs besides `make test`: end-to-end training runs of 20 s and more
# (resumption after SIGKILL, determinism, DDP, workers, Ctrl-C, ...), an Optuna sweep of 2 trials,
# and the end-to-end CLI tests run with the commands of a wheel installed in a fresh virtualenv.
test-slow: install
	$(PYTEST) --durations=20 -m "slow and not gpu and not browser and not container"

# Both container images (Dockerfile: PyTorch; Dockerfile.runtime: exported models) built on a Debian
# base made with mmdebstrap, run, sent good and bad requests, stopped (needs root, docker.io, mmdebstrap).
test-container: install
	$(BIN)/python -m pytest -q -s -m container tests/test_container.py

# onnxruntime-web for seq2seq-export format=web, installed once by `npm ci` from
# seq2seq/web/package-lock.json into ~/.cache/seq2seq/web-runtime (the export does it when missing).
web-runtime: install
	$(BIN)/python -m seq2seq.web.runtime

# The web page of seq2seq-serve and the exported site (format=web) in headless Chromium (needs:
# apt-get install chromium chromium-driver; npm, for onnxruntime-web).
test-browser: install
	$(BIN)/python -m pytest -q -m browser

test-all: install
	$(PYTEST) -m ""

# On a machine with CUDA: the gpu tests (a 2-device DDP run when there are two devices), then the
# recipe model's training throughput in fp32 and bf16-mixed (benchmarks/results/gpu-check.json;
# Multi30k from $$SEQ2SEQ_DATA when there, else a generated corpus of the same vocabulary).
gpu-check: install
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device')"
	$(BIN)/python -m pytest -q -m gpu --durations=10
	$(BIN)/python benchmarks/throughput.py --device cuda --variants train --rounds 1 --steps 30 \
		$(if $(wildcard $(SEQ2SEQ_DATA)/multi30k/train.de*),,--synthetic) --out benchmarks/results/gpu-check.json

# Multi30k de->en with the small recipe for 6 minutes of training (a time budget: a slow CPU
# trains fewer steps, not longer), then test BLEU and sample translations of test_2016_flickr.
# Uses $$SEQ2SEQ_DATA when set, else downloads into ./data.
DEMO_TIME ?= 00:00:06:00
demo: install
	$(BIN)/seq2seq-train experiment=multi30k_de_en_small trainer.max_time=$(DEMO_TIME) hydra.run.dir=outputs/demo

# What CI runs after the tests: a short Multi30k run must clear a BLEU floor. A fixed number of
# steps, not a time, so a slow or busy machine trains the same model and scores the same BLEU; a
# model that does not learn scores near 0. The small recipe learns in 1,000 steps what the full
# one needs 2,000 for, at a fraction of the cost per step; README, Tests, gives the scores of
# several seeds against the floor.
BLEU_GATE_STEPS ?= 1000
BLEU_FLOOR ?= 15
bleu-gate: install
	$(BIN)/seq2seq-train experiment=multi30k_de_en_small trainer.max_steps=$(BLEU_GATE_STEPS) \
		evaluate_test=false hydra.run.dir=outputs/bleu-gate
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
