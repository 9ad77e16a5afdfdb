"""Train the Tiny Shakespeare character LM recipe and score the held-out 10%: the quality bar, measured.

    python benchmarks/char_lm_quality.py --name full
    python benchmarks/char_lm_quality.py --name 30min -- trainer.max_time=00:00:30:00

Everything after `--` is passed to seq2seq-train as Hydra overrides. Prints a table and writes
benchmarks/results/char_lm_<name>.json: training time, epochs, steps, parameters, peak memory
of the training process, and the held-out loss (nats/char, bits/char) of the exported model,
scored again by `seq2seq-evaluate text=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from pathlib import Path

from reporting import BIN, RESULTS, parameter_count, report, run_timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="label of this run; names the output files")
    parser.add_argument("overrides", nargs="*", help="seq2seq-train overrides (after --)")
    args = parser.parse_args()
    run_dir = RESULTS / "runs" / f"char_lm_{args.name}"
    RESULTS.mkdir(parents=True, exist_ok=True)

    train_seconds = run_timed([str(BIN / "seq2seq-train"), "experiment=tiny_shakespeare_char",
                         "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *args.overrides])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    model_dir = run_dir / "model"
    config = json.loads((model_dir / "model.json").read_text())
    params = parameter_count(model_dir / "weights.pt")

    # The held-out text as the recipe cuts it (last 10% of the characters), scored by the CLI.
    data_root = Path(os.environ.get("SEQ2SEQ_DATA", "data"))
    text = (data_root / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    held_out = run_dir / "held_out.txt"
    held_out.write_text(text[int(len(text) * 0.9):], encoding="utf-8")
    scores_path = run_dir / "held_out_scores.json"
    run_timed([str(BIN / "seq2seq-evaluate"), f"model={model_dir}", f"text={held_out}", f"json={scores_path}",
               "device=cpu"])
    scores = json.loads(scores_path.read_text())

    result = {
        "name": args.name,
        "overrides": args.overrides,
        "train_seconds": round(train_seconds, 1),
        "epochs": config["trained"]["epochs"],
        "steps": config["trained"]["steps"],
        "val_loss_at_export": config["trained"]["val_loss"],
        "parameters": params,
        "train_peak_rss_mb": round(peak_rss_mb, 1),
        "held_out_nats_per_char": scores["nats_per_char"],
        "held_out_bits_per_char": scores["bits_per_char"],
        "held_out_chars": scores["chars"],
    }
    report(result, RESULTS / f"char_lm_{args.name}.json")


if __name__ == "__main__":
    main()
