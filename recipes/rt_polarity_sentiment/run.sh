#!/usr/bin/env bash
# Sentence polarity (Rotten Tomatoes) end to end: get the data (or use $SEQ2SEQ_DATA), train a
# SentencePiece + bi-LSTM classifier from scratch, report accuracy, macro-F1 and the confusion
# matrix on the test split, then label a few sentences.
#   bash recipes/rt_polarity_sentiment/run.sh
#   bash recipes/rt_polarity_sentiment/run.sh model.pooling=attention
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
run_dir=outputs/rt_polarity_sentiment
.venv/bin/seq2seq-train experiment=rt_polarity_sentiment hydra.run.dir="$run_dir" "$@"
printf '%s\n' "a gorgeous , witty , seductive movie ." "the plot is nothing but boilerplate clichés ." \
  | .venv/bin/seq2seq-classify model="$run_dir/model"
