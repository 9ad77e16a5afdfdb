#!/usr/bin/env bash
# Weekly Mauna Loa CO2 end to end: get the series (or use $SEQ2SEQ_DATA), train the LSTM
# forecaster, score it and the two baselines on the last 4 years, then forecast 2 years past
# the end of the data and draw the test years (forecast from the end of validation vs truth).
#   bash recipes/co2_forecast/run.sh
#   bash recipes/co2_forecast/run.sh model.horizon=1        # the autoregressive one-step model
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
run_dir=outputs/co2_forecast
.venv/bin/seq2seq-train experiment=co2_forecast hydra.run.dir="$run_dir" "$@"
.venv/bin/seq2seq-forecast model="$run_dir/model" horizon=104 \
    output="$run_dir/forecast.csv" plot="$run_dir/forecast.png"
first_test_week=$(.venv/bin/python -c "import json; print(json.load(open('$run_dir/test_scores.json'))['test_span']['first'])")
.venv/bin/seq2seq-forecast model="$run_dir/model" origin="$first_test_week" horizon=208 \
    output="$run_dir/test_rollout.csv" plot="$run_dir/test_rollout.png"
