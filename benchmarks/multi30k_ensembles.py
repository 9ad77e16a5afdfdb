"""Seeds, averaged checkpoints, ensembles, subword regularization and a distilled student on
Multi30k test_2016_flickr: BLEU (beam 5 and greedy), decoding time, parameters, and the paired
significance test of each system against the best single model.

    python benchmarks/multi30k_ensembles.py runs=RUNS [singles=seed1,seed2,seed3]
        [others=alpha0.1,alpha0.5] [student=student] [ar_trials=10000] [limit=N]

RUNS holds one folder per training run (each with model/ and checkpoints/), as
recipes/multi30k_de_en/compare.sh writes them. A run's averaged models (all its kept checkpoints;
the best two by validation BLEU) are written to <run>/averaged and <run>/averaged_best_2 when
missing. Decoding runs in this process after loading, once per system (the CPU and thread count
are in the JSON). Prints a table and writes
benchmarks/results/multi30k_ensembles.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from reporting import RESULTS, parameter_count, report

from seq2seq.averaging import average
from seq2seq.metrics import compare_systems, format_comparison, score_corpus
from seq2seq.tasks.translation.api import Translator
from seq2seq.text import read_lines


def decode(models: list[Path], sources: list[str], refs: list[str], precision: str = "auto") -> dict:
    translator = Translator.load([str(m) for m in models], device="cpu", precision=precision)
    row: dict = {}
    for name, beam in (("beam5", 5), ("greedy", 1)):
        started = time.perf_counter()
        hyps = translator.translate(sources, beam=beam)
        row[f"{name}_seconds"] = round(time.perf_counter() - started, 2)
        row[f"{name}_bleu"] = round(score_corpus(hyps, refs, ("bleu",))["bleu"].score, 2)
        row[f"{name}_hyps"] = hyps
    return row


def trained(model: Path) -> dict:
    config = json.loads((model / "model.json").read_text())
    return config.get("trained", {})


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    runs = Path(args["runs"])
    singles = args.get("singles", "seed1,seed2,seed3").split(",")
    others = [o for o in args.get("others", "alpha0.1,alpha0.5").split(",") if o]
    student = args.get("student", "student")
    data_dir = Path(json.loads((runs / singles[0] / "model" / "model.json").read_text())["data"]["data_dir"])
    limit = int(args.get("limit", 0)) or None  # the first N sentences only: a quick check of the script
    sources = read_lines(data_dir / "test_2016_flickr.de")[:limit]
    refs = read_lines(data_dir / "test_2016_flickr.en")[:limit]

    systems: dict[str, list[Path]] = {}
    for name in singles:
        systems[name] = [runs / name / "model"]
    for name in singles:
        # All kept checkpoints (save_top_k), and the best two by validation BLEU.
        kept = sorted((runs / name / "checkpoints").glob("*-bleu*.ckpt"),
                      key=lambda p: float(p.stem.rsplit("bleu", 1)[1]), reverse=True)
        for label, inputs in (("averaged", kept), ("averaged best 2", kept[:2])):
            averaged = runs / name / label.replace(" ", "_")
            if not (averaged / "model.json").is_file():
                average(inputs, averaged, like=runs / name / "model")
            systems[f"{name} {label}"] = [averaged]
    for size in range(2, len(singles) + 1):
        systems[f"ensemble of {size}"] = [runs / name / "model" for name in singles[:size]]
    for name in others:
        if (runs / name / "model" / "model.json").is_file():
            systems[name] = [runs / name / "model"]
    if (runs / student / "model" / "model.json").is_file():
        systems[student] = [runs / student / "model"]
        systems[f"{student} int8"] = [runs / student / "model"]  # how a production CPU decodes a student

    rows: dict[str, dict] = {}
    for name, models in systems.items():
        row = decode(models, sources, refs, precision="int8" if name.endswith(" int8") else "auto")
        row["parameters"] = sum(parameter_count(m / "weights.pt") for m in models)
        if len(models) == 1 and "averaged" not in name and not name.endswith(" int8"):
            done = trained(models[0])
            row["steps"], row["val_bleu"] = done.get("steps"), done.get("val_bleu")
        rows[name] = row
        print(f"{name}: beam 5 {row['beam5_bleu']} in {row['beam5_seconds']} s, greedy {row['greedy_bleu']}",
              flush=True)

    best = max(singles, key=lambda n: rows[n]["beam5_bleu"])
    compared = [best, *[n for n in rows if n != best]]
    significance = compare_systems([(n, rows[n]["beam5_hyps"]) for n in compared], refs, metrics=("bleu",),
                                   ar_trials=int(args.get("ar_trials", 10000)))
    print(format_comparison(significance))
    metric = next(k for k in significance if k not in ("systems", "signatures"))
    for name, result in zip(significance["systems"], significance[metric]):
        rows[name]["p_bootstrap"], rows[name]["p_ar"] = result.get("p_bootstrap"), result.get("p_ar")

    header = ("| system | steps | parameters | test BLEU beam 5 | greedy | beam 5 time | greedy time "
              "| p vs best single (AR) |")
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        p = "baseline" if name == best else f"{row['p_ar']:.4f}"
        lines.append(f"| {name} | {row.get('steps', '')} | {row['parameters']:,} | {row['beam5_bleu']:.2f} | "
                     f"{row['greedy_bleu']:.2f} | {row['beam5_seconds']:.2f} s | {row['greedy_seconds']:.2f} s | {p} |")
    print("\n".join(lines))
    for row in rows.values():
        row.pop("beam5_hyps"), row.pop("greedy_hyps")
    report({"runs": str(runs), "sentences": len(sources), "best_single": best, "systems": rows,
            "signatures": significance["signatures"], "table": lines},
           RESULTS / "multi30k_ensembles.json")


if __name__ == "__main__":
    main()
