#!/usr/bin/env bash
# Multi30k de->en end to end: get the data (or use $SEQ2SEQ_DATA), train, score test_2016_flickr.
#   bash recipes/multi30k_de_en/run.sh                       # full recipe
#   bash recipes/multi30k_de_en/run.sh trainer.max_time=00:00:12:00
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
run_dir=outputs/multi30k_de_en
.venv/bin/seq2seq-train experiment=multi30k_de_en hydra.run.dir="$run_dir" "$@"
.venv/bin/seq2seq-evaluate model="$run_dir/model" src=test_2016_flickr.de ref=test_2016_flickr.en \
  beam=5 json="$run_dir/test_beam5.json"
