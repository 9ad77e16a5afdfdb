"""Decoding speed of a model directory on Multi30k test_2016_flickr, with the BLEU it buys.

    python benchmarks/translate_speed.py model=benchmarks/results/runs/full/model

Times greedy and beam-5 decoding, in fp32 and with bf16 matrix products, in this process after
the model is loaded (median of `repeats` runs), then the whole `seq2seq-translate` command for
beam 5 (`command_precision`, bf16 by default), and scores its output for comparison. Prints a table and writes
benchmarks/results/translate_speed.json.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from seq2seq.metrics import score_corpus
from seq2seq.tasks.translation.api import Translator
from seq2seq.text import read_lines

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model_dir = Path(args["model"])
    repeats = int(args.get("repeats", 3))
    command_precision = args.get("command_precision", "bf16")
    translator = Translator.load(model_dir, device="cpu")
    data_dir = Path(translator.bundle.config["data"]["data_dir"])
    src_path, ref_path = data_dir / "test_2016_flickr.de", data_dir / "test_2016_flickr.en"
    sources, refs = read_lines(src_path), read_lines(ref_path)

    result: dict = {"model": str(model_dir), "sentences": len(sources), "torch": torch.__version__,
                    "threads": torch.get_num_threads()}
    for precision, (mode, beam) in itertools.product(("fp32", "bf16"), (("greedy", 1), ("beam5", 5))):
        translator.precision = precision
        name = f"{mode}_{precision}"
        times, outputs = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            outputs = translator.translate(sources, beam=beam)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        tokens = sum(len(ids) + 1 for ids in translator.tgt_tokenizer.encode(outputs))
        result[f"{name}_seconds"] = round(seconds, 3)
        result[f"{name}_sentences_per_s"] = round(len(sources) / seconds, 1)
        result[f"{name}_tgt_tokens_per_s"] = round(tokens / seconds, 1)
        result[f"{name}_bleu"] = round(score_corpus(outputs, refs, ("bleu",))["bleu"].score, 2)

    out_file = RESULTS / "translate_speed_output.en"
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "seq2seq-translate"), f"model={model_dir}",
                    f"input={src_path}", f"output={out_file}", "beam=5", "device=cpu", "progress=false",
                    f"precision={command_precision}"],
                   check=True)
    result["command_precision"] = command_precision
    result["beam5_command_seconds"] = round(time.perf_counter() - start, 3)
    result["beam5_command_bleu"] = round(score_corpus(read_lines(out_file), refs, ("bleu",))["bleu"].score, 2)

    (RESULTS / "translate_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
