#!/usr/bin/env bash
# Tiny Shakespeare character LM end to end: get the text (or use $SEQ2SEQ_DATA), train on the
# first 90% of the characters, score the last 10%, write a sample.
#   bash recipes/tiny_shakespeare_char/run.sh
#   bash recipes/tiny_shakespeare_char/run.sh trainer.max_time=00:00:20:00
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
run_dir=outputs/tiny_shakespeare_char
.venv/bin/seq2seq-train experiment=tiny_shakespeare_char hydra.run.dir="$run_dir" "$@"
.venv/bin/seq2seq-generate model="$run_dir/model" prompt="ROMEO:" max_chars=500 temperature=0.8 seed=1
