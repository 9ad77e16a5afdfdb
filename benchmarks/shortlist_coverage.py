"""How much of the reference translation a lexical shortlist keeps, and how small it is.

    python benchmarks/shortlist_coverage.py --tokenizer runs/.../tokenizers/deen-XXXX.model
    python benchmarks/shortlist_coverage.py --tokenizer T.model --train-lines 2000   # quick

On Multi30k de->en with a joint SentencePiece model: builds shortlists from train with IBM model 1
and with the Dice co-occurrence baseline, for several (frequent, per_source) settings, then on
test_2016_flickr, batch by batch (`--batch` consecutive lines, as a translation command would see
them), measures the size of the shortlist of each batch and the coverage: the share of the
reference target pieces that fall inside their batch's shortlist, and the share of sentences
whose reference is covered entirely. A decoder restricted to the shortlist cannot produce a
piece outside it, so an uncovered reference piece is a translation it can no longer reach.
Prints a table; writes JSON to benchmarks/results/shortlist_coverage.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reporting import RESULTS, report  # noqa: E402

from seq2seq.tasks.translation.shortlist import Shortlist, build_shortlist  # noqa: E402
from seq2seq.text import read_lines  # noqa: E402
from seq2seq.tokenizer import PAD_ID, Tokenizer, file_digest  # noqa: E402

# (method, frequent, per_source). The same K gives Dice larger shortlists (its candidates favour
# rare pieces, which overlap less between source pieces), so K=10 rows compare the methods at
# similar sizes; frequent-only (K=0) shows what the translation candidates add.
CONFIGURATIONS = [
    ("ibm1", 100, 75), ("ibm1", 50, 50), ("ibm1", 100, 25), ("ibm1", 100, 10),
    ("cooccurrence", 100, 75), ("cooccurrence", 50, 50), ("cooccurrence", 100, 25), ("cooccurrence", 100, 10),
    ("ibm1", 100, 0),
]


def default_data_dir() -> Path:
    if "SEQ2SEQ_DATA" in os.environ:
        return Path(os.environ["SEQ2SEQ_DATA"]) / "multi30k"
    return Path("/work/shared/data/multi30k")


def padded(batch: list[list[int]]) -> torch.Tensor:
    width = max((len(ids) for ids in batch), default=0)
    return torch.tensor([ids + [PAD_ID] * (width - len(ids)) for ids in batch], dtype=torch.long)


def coverage(shortlist: Shortlist, sources: list[list[int]], references: list[list[int]], batch: int) -> dict:
    sizes, covered_pieces, pieces, covered_sentences = [], 0, 0, 0
    for first in range(0, len(sources), batch):
        ids = shortlist.ids_for(padded(sources[first:first + batch]))
        sizes.append(ids.numel())
        allowed = torch.zeros(shortlist.tgt_vocab_size, dtype=torch.bool)
        allowed[ids] = True
        for reference in references[first:first + batch]:
            inside = int(allowed[torch.tensor(reference, dtype=torch.long)].sum()) if reference else 0
            covered_pieces += inside
            pieces += len(reference)
            covered_sentences += inside == len(reference)
    return {"mean_size": sum(sizes) / len(sizes), "max_size": max(sizes), "piece_coverage": covered_pieces / pieces,
            "sentence_coverage": covered_sentences / len(references)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, type=Path, help="joint de/en SentencePiece model")
    parser.add_argument("--data", type=Path, default=default_data_dir(),
                        help="folder with train.{de,en} and test_2016_flickr.{de,en} (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=100, help="test sentences per batch (consecutive lines)")
    parser.add_argument("--iterations", type=int, default=5, help="IBM 1 EM rounds")
    parser.add_argument("--train-lines", type=int, default=None, help="use only the first N training pairs")
    parser.add_argument("--out", type=Path, default=RESULTS / "shortlist_coverage.json")
    args = parser.parse_args()

    tokenizer = Tokenizer(args.tokenizer)
    digest = file_digest(tokenizer.model_file)
    train_src = tokenizer.encode(read_lines(args.data / "train.de")[:args.train_lines])
    train_tgt = tokenizer.encode(read_lines(args.data / "train.en")[:args.train_lines])
    test_src = tokenizer.encode(read_lines(args.data / "test_2016_flickr.de"))
    test_ref = tokenizer.encode(read_lines(args.data / "test_2016_flickr.en"))

    result: dict = {"tokenizer": str(args.tokenizer), "vocab_size": tokenizer.vocab_size,
                    "train_pairs": len(train_src), "test_sentences": len(test_src), "batch": args.batch,
                    "iterations": args.iterations,
                    # the build times are wall clock: a busy machine shows here
                    "load_average_before": round(os.getloadavg()[0], 2)}
    rows = []
    for method, frequent, per_source in CONFIGURATIONS:
        wall, cpu = time.perf_counter(), time.process_time()
        shortlist = build_shortlist(train_src, train_tgt, tokenizer.vocab_size, tokenizer.vocab_size,
                                    frequent=frequent, per_source=per_source, iterations=args.iterations,
                                    method=method, src_tokenizer_digest=digest, tgt_tokenizer_digest=digest)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        figures = coverage(shortlist, test_src, test_ref, args.batch)
        rows.append((method, frequent, per_source, wall, cpu, figures))
        name = f"{method}_f{frequent}_k{per_source}"
        result |= {f"{name}_build_seconds": round(wall, 2), f"{name}_build_cpu_seconds": round(cpu, 2),
                   f"{name}_mean_size": round(figures["mean_size"], 1), f"{name}_max_size": figures["max_size"],
                   f"{name}_piece_coverage": round(figures["piece_coverage"], 4),
                   f"{name}_sentence_coverage": round(figures["sentence_coverage"], 4)}
    result["load_average_after"] = round(os.getloadavg()[0], 2)

    header = (f"{'method':<13} {'N':>4} {'K':>4} {'build s':>8} {'cpu s':>7} {'mean size':>10} {'max size':>9} "
              f"{'pieces %':>9} {'sentences %':>12}")
    print(header)
    print("-" * len(header))
    for method, frequent, per_source, wall, cpu, f in rows:
        print(f"{method:<13} {frequent:>4} {per_source:>4} {wall:>8.2f} {cpu:>7.2f} {f['mean_size']:>10.1f} "
              f"{f['max_size']:>9} {100 * f['piece_coverage']:>9.2f} {100 * f['sentence_coverage']:>12.1f}")
    print()
    report(result, args.out)


if __name__ == "__main__":
    main()
