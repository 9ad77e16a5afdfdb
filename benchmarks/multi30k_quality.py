"""Train the Multi30k de->en recipe and score test_2016_flickr: the quality bar, measured.

    python benchmarks/multi30k_quality.py --name full
    python benchmarks/multi30k_quality.py --name 12min -- trainer.max_time=00:00:12:00
    python benchmarks/multi30k_quality.py --name none-12min -- trainer.max_time=00:00:12:00 model.attention=none

Everything after `--` is passed to seq2seq-train as Hydra overrides. Prints a table and writes
benchmarks/results/multi30k_<name>.json with the training time, epochs, steps, parameter count,
peak memory of the training process, and BLEU/chrF/TER (beam 5 and greedy).
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

from reporting import BIN, RESULTS, parameter_count, report, run_timed


def evaluate(model_dir: Path, beam: int, json_path: Path) -> dict:
    seconds = run_timed([str(BIN / "seq2seq-evaluate"), f"model={model_dir}", "src=test_2016_flickr.de",
                   "ref=test_2016_flickr.en", f"beam={beam}", f"json={json_path}", "device=cpu"])
    scores = json.loads(json_path.read_text())
    scores["command_seconds"] = round(seconds, 2)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="label of this run; names the output files")
    parser.add_argument("overrides", nargs="*", help="seq2seq-train overrides (after --)")
    args = parser.parse_args()
    run_dir = RESULTS / "runs" / args.name
    RESULTS.mkdir(parents=True, exist_ok=True)

    train_seconds = run_timed([str(BIN / "seq2seq-train"), "experiment=multi30k_de_en", "evaluate_test=false",
                         "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *args.overrides])
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    model_dir = run_dir / "model"
    config = json.loads((model_dir / "model.json").read_text())
    params = parameter_count(model_dir / "weights.pt")
    beam5 = evaluate(model_dir, 5, run_dir / "test_beam5.json")
    greedy = evaluate(model_dir, 1, run_dir / "test_greedy.json")

    result = {
        "name": args.name,
        "overrides": args.overrides,
        "train_seconds": round(train_seconds, 1),
        "epochs": config["trained"]["epochs"],
        "steps": config["trained"]["steps"],
        "val_bleu": config["trained"].get("val_bleu"),
        "parameters": params,
        "train_peak_rss_mb": round(peak_rss_mb, 1),
        "test_bleu_beam5": beam5["bleu"]["score"],
        "test_chrf_beam5": beam5["chrf"]["score"],
        "test_ter_beam5": beam5["ter"]["score"],
        "test_bleu_greedy": greedy["bleu"]["score"],
        "bleu_signature": beam5["bleu"]["signature"],
        "beam5_decode_seconds": beam5["decode_seconds"],
        "greedy_decode_seconds": greedy["decode_seconds"],
    }
    report(result, RESULTS / f"multi30k_{args.name}.json")


if __name__ == "__main__":
    main()
