#!/usr/bin/env bash
# Seeds, averaged checkpoints, ensembles, subword regularization and a distilled student, each
# run trained for the same 11 minutes (about 100 minutes in all on a 2-core CPU), then one table:
#   bash recipes/multi30k_de_en/compare.sh [RUNS]          # default RUNS=outputs/multi30k_compare
# Resumable: a finished run (RUNS/<name>/DONE) is skipped, an interrupted one continues from its
# last.ckpt, and the distillation from its finished chunks. Results: recipes/multi30k_de_en/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
make install
runs=$(realpath -m "${1:-outputs/multi30k_compare}")
data_dir=${SEQ2SEQ_DATA:-data}/multi30k
budget=(experiment=multi30k_de_en trainer.max_time=00:00:11:00 trainer.val_check_interval=0.5
        callbacks.model_checkpoint.save_top_k=4 export_average=1 evaluate_test=false)
# export_average=1: each run's model/ is its best checkpoint, the "single model" of the table.

train() {  # train NAME OVERRIDES...
  local name=$1; shift
  [ -e "$runs/$name/DONE" ] && return
  local resume=()
  [ -e "$runs/$name/checkpoints/last.ckpt" ] && resume=("resume=$runs/$name/checkpoints/last.ckpt")
  .venv/bin/seq2seq-train "${budget[@]}" "$@" hydra.run.dir="$runs/$name" "${resume[@]}"
  touch "$runs/$name/DONE"
}

for seed in 1 2 3; do train "seed$seed" seed=$seed; done
train alpha0.1 seed=1 tokenizer.sampling.alpha=0.1
train alpha0.5 seed=1 tokenizer.sampling.alpha=0.5
.venv/bin/seq2seq-distill "teacher=[$runs/seed1/model,$runs/seed2/model,$runs/seed3/model]" \
  data_dir="$data_dir" output="$runs/distilled" beam=5
tokenizer=$runs/seed1/model/src.spm.model
train student seed=1 data.data_dir="$runs/distilled" data.download=null model.decoder_hidden_size=256 \
  +tokenizer.files.src="$tokenizer" +tokenizer.files.tgt="$tokenizer"
.venv/bin/python benchmarks/multi30k_ensembles.py runs="$runs"
