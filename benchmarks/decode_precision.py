"""Decoding speed and BLEU by precision: fp32, int8 (dynamic quantization) and bf16 where native.

    python benchmarks/decode_precision.py model=PATH/model [repeats=3] [limit=N] [bf16=auto|1|0] [threads=N]

Greedy and beam 5 over Multi30k test_2016_flickr (the model's data_dir, or data_dir=...), every
precision timed in this one process, interleaved (fp32, int8, [bf16], fp32, int8, ...) so that
other load on shared cores hits all of them alike; medians of `repeats` runs, speed-ups as
ratios of the medians. BLEU is sacreBLEU against the reference; "same_as_fp32" counts the
sentences whose output is identical to fp32's. bf16 is timed only where the CPU has native bf16
(or bf16=1): elsewhere it is emulated and slow. The table and
benchmarks/results/decode_precision.json name the CPU and whether it has native bf16.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from reporting import RESULTS, report

from seq2seq.metrics import score_corpus
from seq2seq.precision import machine_summary
from seq2seq.tasks.translation.api import Translator
from seq2seq.text import read_lines

MODES = (("greedy", 1), ("beam5", 5))


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model_dir = Path(args["model"])
    repeats = int(args.get("repeats", 3))
    if "threads" in args:
        torch.set_num_threads(int(args["threads"]))
    machine = machine_summary()
    with_bf16 = {"1": True, "0": False}.get(args.get("bf16", "auto"), machine["cpu_native_bf16"])

    fp32 = Translator.load(model_dir, device="cpu")
    start = time.perf_counter()
    int8 = Translator(fp32.bundle, fp32.device, "int8")
    quantize_seconds = time.perf_counter() - start
    translators = {"fp32": fp32, "int8": int8}
    if with_bf16:
        translators["bf16"] = Translator(fp32.bundle, fp32.device, "bf16")

    data_dir = Path(args.get("data_dir", fp32.bundle.config["data"]["data_dir"]))
    sources = read_lines(data_dir / "test_2016_flickr.de")
    refs = read_lines(data_dir / "test_2016_flickr.en")
    if "limit" in args:
        sources, refs = sources[:int(args["limit"])], refs[:int(args["limit"])]

    times: dict[str, list[float]] = {}
    outputs: dict[str, list[str]] = {}
    for _ in range(repeats):
        for mode, beam in MODES:
            for precision, translator in translators.items():
                begin = time.perf_counter()
                outputs[f"{mode}_{precision}"] = translator.translate(sources, beam=beam)
                times.setdefault(f"{mode}_{precision}", []).append(time.perf_counter() - begin)

    result: dict = {"model": str(model_dir), "sentences": len(sources), "repeats": repeats, **machine,
                    "int8_quantize_seconds": round(quantize_seconds, 3)}
    for mode, _ in MODES:
        reference = outputs[f"{mode}_fp32"]
        fp32_seconds = statistics.median(times[f"{mode}_fp32"])
        for precision in translators:
            name = f"{mode}_{precision}"
            seconds = statistics.median(times[name])
            result[f"{name}_seconds"] = round(seconds, 3)
            result[f"{name}_seconds_range"] = [round(min(times[name]), 3), round(max(times[name]), 3)]
            result[f"{name}_bleu"] = round(score_corpus(outputs[name], refs, ("bleu",))["bleu"].score, 2)
            if precision != "fp32":
                result[f"{name}_speedup_vs_fp32"] = round(fp32_seconds / seconds, 2)
                result[f"{name}_same_as_fp32"] = sum(a == b for a, b in zip(outputs[name], reference))
    report(result, RESULTS / "decode_precision.json")


if __name__ == "__main__":
    main()
