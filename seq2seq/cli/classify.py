"""seq2seq-classify: label sentences with a classifier model, at a prompt or line by line.

    seq2seq-classify model=outputs/.../model                          # prompt (terminal on stdin)
    seq2seq-classify model=... input=reviews.txt output=labels.tsv
    cat reviews.txt | seq2seq-classify model=... > labels.tsv

Output: one `label<TAB>probability` row per input line, in input order (the probability of that
label, the most probable one). An empty input line has nothing to classify: it gives an empty
output line, so the output stays aligned with the input, and a count of them on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Iterable

import hydra
from omegaconf import DictConfig

from seq2seq.classification import format_confusion
from seq2seq.classifier import Classifier, Prediction
from seq2seq.cli.common import (APPS_CONF_DIR, line_editing, on_off, open_output, run_prompt_command,
                                run_as_command)
from seq2seq.cli.translate import chunks, read_utf8_lines
from seq2seq.errors import UserError

HELP = """commands:
  :help                 this text
  :all on|off           show every label's probability
  :settings             show the current settings
  :quit                 leave (Ctrl-D and Ctrl-C also do)
Any other line is classified."""

SETTINGS = {"all": ("all_probabilities", on_off)}


def format_row(prediction: Prediction | None) -> str:
    return "" if prediction is None else f"{prediction.label}\t{prediction.probability:.4f}"


def classify_stream(classifier: Classifier, lines: Iterable[str], out: IO[str], cfg: DictConfig) -> tuple[int, int]:
    """Classify `lines` chunk by chunk, writing rows in input order; (lines, empty lines)."""
    done = empty = 0
    for chunk in chunks(lines, max(1, cfg.chunk_lines)):
        for prediction in classifier.classify(chunk, batch_tokens=cfg.batch_tokens):
            out.write(format_row(prediction) + "\n")
            empty += prediction is None
        out.flush()
        done += len(chunk)
    return done, empty


def classify_file(classifier: Classifier, cfg: DictConfig) -> None:
    if cfg.input == "-":
        source, name = sys.stdin.buffer, "<stdin>"
    else:
        path = Path(cfg.input)
        if not path.exists():
            raise UserError(f"{path}: file not found")
        if path.is_dir():
            raise UserError(f"{path}: is a directory, expected a text file")
        source, name = open(path, "rb"), str(path)
    try:
        with open_output(cfg.output) as out:
            _, empty = classify_stream(classifier, read_utf8_lines(source, name), out, cfg)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if empty:
        print(f"note: {empty} empty input line{'s' if empty > 1 else ''} got an empty output line", file=sys.stderr)


def interactive(classifier: Classifier, cfg: DictConfig) -> None:
    """A read-classify-print loop with line editing and history (readline)."""
    options = {"all_probabilities": bool(cfg.all_probabilities)}
    print(f"seq2seq-classify: {cfg.model} ({classifier.device}; labels: {', '.join(classifier.labels)}). "
          "Type a sentence, or :help.", file=sys.stderr)
    try:
        with line_editing(".seq2seq_classify_history"):
            while True:
                try:
                    line = input("> ")
                except EOFError:
                    print(file=sys.stderr)
                    break
                if line.startswith(":"):
                    if not run_prompt_command(line, options, SETTINGS, HELP):
                        break
                    continue
                prediction = classifier.classify([line])[0]
                if prediction is None:
                    print("(empty line: type a sentence to classify, or :help)")
                elif options["all_probabilities"]:
                    print("  ".join(f"{label} {p:.4f}" for label, p in prediction.probabilities.items()))
                else:
                    print(f"{prediction.label} {prediction.probability:.4f}")
    except KeyboardInterrupt:
        print(file=sys.stderr)


def evaluate_test_split(model_dir: Path, datamodule, run_dir: Path, device: str | None) -> dict | None:
    """Score the exported model on the data's test split: print the report, write test_scores.json
    and test.predictions.tsv (one `label<TAB>probability` row per test sentence)."""
    test = datamodule.splits().get("test")
    if test is None:
        return None
    classifier = Classifier.load(model_dir, device=device)
    scores = classifier.evaluate(test.texts, test.labels)
    rows = [format_row(p) for p in classifier.classify(test.texts)]
    (run_dir / "test.predictions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (run_dir / "test_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"\nTest split ({scores['examples']:,} sentences): accuracy {scores['accuracy']:.4f}, "
          f"macro-F1 {scores['macro_f1']:.4f}")
    print(format_confusion(scores))
    return scores


@run_as_command
def classify(cfg: DictConfig) -> None:
    if cfg.model is None:
        raise UserError("model= is required: the path of a classifier model directory (a run's 'model' folder)")
    if not isinstance(cfg.batch_tokens, int) or cfg.batch_tokens <= 0:
        raise UserError(f"batch_tokens={cfg.batch_tokens} must be a positive whole number")
    classifier = Classifier.load(cfg.model, device=cfg.device, precision=cfg.precision)
    if cfg.input is None and sys.stdin.isatty():
        interactive(classifier, cfg)
        return
    if cfg.input is None:
        cfg.input = "-"
    try:
        classify_file(classifier, cfg)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()


@hydra.main(config_path=APPS_CONF_DIR, config_name="classify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    classify(cfg)


if __name__ == "__main__":
    main()
