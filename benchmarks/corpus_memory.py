"""Peak memory of training against corpus size: memory-mapped corpora vs. corpora read into lists.

    python benchmarks/corpus_memory.py                        # 100k, 1M and 10M pairs
    python benchmarks/corpus_memory.py --sizes 2000 20000 --steps 20   # quick

For each size, on generated sentence pairs (random words, target = the words reversed):
`seq2seq-prepare` (wall time, peak RSS), then `seq2seq-train data.storage=memmap` for a fixed
number of steps of a small model (peak RSS, wall time), and, for the sizes up to
--memory-up-to, the same training with data.storage=memory for comparison. Peak RSS is each
child process's own maximum resident set (os.wait4). Prints a table; writes JSON to
benchmarks/results/corpus_memory.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reporting import BIN, RESULTS, report  # noqa: E402


def generate(directory: Path, pairs: int, seed: int = 0, words: int = 2000, block: int = 200_000) -> None:
    """train.src/train.tgt with `pairs` lines, written block by block (never all in memory)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = ["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(words)]
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.src", "w", encoding="utf-8") as src, \
            open(directory / "train.tgt", "w", encoding="utf-8") as tgt:
        for first in range(0, pairs, block):
            lengths = rng.integers(4, 21, size=min(block, pairs - first)).tolist()
            ids = iter(rng.integers(0, words, size=sum(lengths)).tolist())
            sentences = [[vocabulary[i] for i in itertools.islice(ids, n)] for n in lengths]
            src.write("\n".join(" ".join(s) for s in sentences) + "\n")
            tgt.write("\n".join(" ".join(reversed(s)) for s in sentences) + "\n")
    valid = [[vocabulary[i] for i in rng.integers(0, words, size=8)] for _ in range(200)]
    (directory / "val.src").write_text("\n".join(" ".join(s) for s in valid) + "\n", encoding="utf-8")
    (directory / "val.tgt").write_text("\n".join(" ".join(reversed(s)) for s in valid) + "\n", encoding="utf-8")


def head(source: Path, target: Path, pairs: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("train.src", "train.tgt"):
        with open(source / name, encoding="utf-8") as whole, open(target / name, "w", encoding="utf-8") as part:
            part.writelines(itertools.islice(whole, pairs))
    for name in ("val.src", "val.tgt"):
        (target / name).write_bytes((source / name).read_bytes())


def run_measured(command: list[str], cwd: Path, log: Path) -> dict:
    """Wall seconds and the child's own peak RSS in MB."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONWARNINGS="ignore"))
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--memory-up-to", type=int, default=1_000_000,
                        help="largest size also trained with data.storage=memory (lists of ids in RAM)")
    parser.add_argument("--work", type=Path, default=RESULTS / "corpus_memory")
    parser.add_argument("--out", type=Path, default=RESULTS / "corpus_memory.json")
    args = parser.parse_args()

    work = args.work.resolve()
    largest = work / f"pairs{max(args.sizes)}"
    if not (largest / "train.tgt").is_file():
        start = time.perf_counter()
        generate(largest, max(args.sizes))
        print(f"generated {max(args.sizes):,} pairs in {time.perf_counter() - start:.0f} s")
    settings = ["data=parallel", "data.src_lang=src", "data.tgt_lang=tgt", "data.test_prefix=null",
                "data.max_tokens=2048", "tokenizer.model_type=word", "tokenizer.vocab_size=1000",
                "tokenizer.input_sentence_size=200000", "model.embed_dim=64", "model.encoder_hidden_size=64",
                "model.decoder_hidden_size=128", "model.encoder_layers=1", "paths.cache_dir=cache",
                "trainer.enable_progress_bar=false", "evaluate_test=false", "~logger"]
    rows, result = [], {"steps": args.steps, "max_tokens": 2048}
    for size in sorted(args.sizes):
        data = work / f"pairs{size}"
        if not (data / "train.tgt").is_file():
            head(largest, data, size)
        corpus = [*settings, f"data.data_dir={data}"]
        row = {"pairs": size, "prepare": run_measured([str(BIN / "seq2seq-prepare"), *corpus], work,
                                                      work / f"prepare{size}.log")}
        for storage in ("memmap", "memory"):
            if storage == "memory" and size > args.memory_up_to:
                continue
            command = [str(BIN / "seq2seq-train"), *corpus, f"data.storage={storage}",
                       f"trainer.max_steps={args.steps}", f"hydra.run.dir={work / f'run-{storage}{size}'}"]
            row[f"train_{storage}"] = run_measured(command, work, work / f"train-{storage}{size}.log")
        rows.append(row)
        for key, value in row.items():
            if isinstance(value, dict):
                for name, number in value.items():
                    result[f"{key}_{name}_{size}"] = number

    print(f"\n{'pairs':>12} | {'prepare s':>9} | {'prepare MB':>10} | {'memmap train s':>14} | "
          f"{'memmap peak MB':>14} | {'in-memory train s':>17} | {'in-memory peak MB':>17}")
    for row in rows:
        memory = row.get("train_memory", {})
        print(f"{row['pairs']:>12,} | {row['prepare']['seconds']:>9} | {row['prepare']['peak_rss_mb']:>10} | "
              f"{row['train_memmap']['seconds']:>14} | {row['train_memmap']['peak_rss_mb']:>14} | "
              f"{memory.get('seconds', '-'):>17} | {memory.get('peak_rss_mb', '-'):>17}")
    report(result, args.out)


if __name__ == "__main__":
    main()
