"""Decoding speed before and after, side by side in one run: shortlist, leaner beam step, int8.

    python benchmarks/decode_speed.py model=RUN/model baseline=/tmp/baseline rounds=3

`baseline` is a checkout of the code to compare with (e.g. `git worktree add /tmp/baseline
f865862`); its variants run in a subprocess with that checkout first on the import path, the
current code's in another, alternating round by round so that both see the same machine state.
Each variant translates Multi30k test_2016_flickr (1,000 sentences) after the model is loaded:
decoding time only, median over the rounds, BLEU (sacreBLEU) of its output, and the share of
sentences whose output equals the baseline fp32 output of the same search. Prints a table and
writes benchmarks/results/decode_speed.json.

Variants: `<precision>_<search>[_<vocabulary>]`, precision fp32 | int8, search beam5 | greedy,
vocabulary full (shortlist=false) | shortlist; ablations of one part each: `_notable` turns the
decoder's per-token gate table off, `_compactnow` makes finished sentences leave a beam batch as
soon as one finishes (search.COMPACT_FRACTION = 0, as before).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE_VARIANTS = ["fp32_beam5", "int8_beam5", "fp32_greedy", "int8_greedy"]
CURRENT_VARIANTS = ["fp32_beam5_full", "fp32_beam5_full_notable", "fp32_beam5_shortlist",
                    "fp32_beam5_shortlist_notable", "fp32_beam5_shortlist_compactnow", "int8_beam5_full",
                    "int8_beam5_shortlist", "fp32_greedy_full", "fp32_greedy_shortlist", "int8_greedy_shortlist"]


def worker(model_dir: str, variants: list[str], src_file: str) -> None:
    """Runs in the subprocess: one JSON line per variant on stdout."""
    import torch

    from seq2seq.tasks.translation.api import Translator
    from seq2seq.text import read_lines

    sources = read_lines(Path(src_file))
    loaded: dict[str, Translator] = {}
    for variant in variants:
        parts = variant.split("_")
        precision, search = parts[0], parts[1]
        if precision not in loaded:
            loaded[precision] = Translator.load(model_dir, device="cpu", precision=precision)
            with torch.inference_mode():  # one-time costs (allocator, gate table) outside the timing
                loaded[precision].translate(sources[:50], beam=5)
        translator = loaded[precision]
        options = {"beam": 5 if search == "beam5" else 1, "batch_tokens": 4000}
        if len(parts) > 2:  # current code only
            options["shortlist"] = "true" if parts[2] == "shortlist" else "false"
        saved = {}
        if "notable" in parts:
            from seq2seq.tasks.translation import decoder

            saved[decoder, "MAX_GATE_TABLE_ENTRIES"] = decoder.MAX_GATE_TABLE_ENTRIES
            decoder.MAX_GATE_TABLE_ENTRIES = 0
            if translator.precision == "int8":
                raise SystemExit("_notable is an fp32 ablation (the int8 copy freezes its table)")
        if "compactnow" in parts:
            from seq2seq.tasks.translation import search

            saved[search, "COMPACT_FRACTION"] = search.COMPACT_FRACTION
            search.COMPACT_FRACTION = 0.0
        with torch.inference_mode():
            start = time.perf_counter()
            outputs = translator.translate(sources, **options)
            seconds = time.perf_counter() - start
        for (module, name), value in saved.items():
            setattr(module, name, value)
        print(json.dumps({"variant": variant, "seconds": seconds, "outputs": outputs}), flush=True)


def run_worker(code_root: Path, model_dir: str, variants: list[str], src_file: str) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(code_root))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", model_dir, ",".join(variants), src_file]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=code_root)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model_dir = str(Path(args["model"]).resolve())
    baseline = Path(args["baseline"]).resolve() if "baseline" in args else None
    rounds = int(args.get("rounds", 3))
    current_variants = args["variants"].split(",") if "variants" in args else CURRENT_VARIANTS
    config = json.loads((Path(model_dir) / "model.json").read_text())
    data_dir = Path(args.get("data", config["data"]["data_dir"]))
    src_file, ref_file = data_dir / "test_2016_flickr.de", data_dir / "test_2016_flickr.en"

    from benchmarks.reporting import RESULTS, report
    from seq2seq.metrics import score_corpus
    from seq2seq.text import read_lines

    refs = read_lines(ref_file)
    runs: dict[str, list[dict]] = {}
    for number in range(rounds):
        jobs = [("current", HERE.parent, current_variants)]
        if baseline is not None:
            jobs.insert(number % 2, ("baseline", baseline, BASELINE_VARIANTS))  # alternate who goes first
        for label, root, variants in jobs:
            for item in run_worker(root, model_dir, variants, str(src_file)):
                runs.setdefault(f"{label}:{item['variant']}", []).append(item)
            print(f"round {number + 1}/{rounds}: {label} done", file=sys.stderr)

    result: dict = {"model": model_dir, "trained": config.get("trained"), "sentences": len(refs),
                    "rounds": rounds, "baseline_code": str(baseline) if baseline else None}
    reference_outputs = {search: runs.get(f"baseline:fp32_{search}", [{}])[0].get("outputs")
                         for search in ("beam5", "greedy")}
    base_seconds = statistics.median(r["seconds"] for r in runs["baseline:fp32_beam5"]) if baseline else None
    base_greedy = statistics.median(r["seconds"] for r in runs["baseline:fp32_greedy"]) if baseline else None
    for name, items in runs.items():
        seconds = statistics.median(item["seconds"] for item in items)
        outputs = items[0]["outputs"]
        search = name.split(":")[1].split("_")[1]
        entry = {"seconds": round(seconds, 3), "sentences_per_s": round(len(outputs) / seconds, 1),
                 "bleu": round(score_corpus(outputs, refs, ("bleu",))["bleu"].score, 2)}
        same = reference_outputs.get(search)
        if same is not None:
            entry["same_as_baseline_fp32"] = round(sum(a == b for a, b in zip(outputs, same)) / len(same), 4)
        base = base_seconds if search == "beam5" else base_greedy
        if base is not None:
            entry["speedup_vs_baseline_fp32"] = round(base / seconds, 2)
        result[name] = entry
    report(result, RESULTS / "decode_speed.json")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3].split(","), sys.argv[4])
    else:
        sys.path.insert(0, str(HERE.parent))
        main()
