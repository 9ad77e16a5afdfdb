"""seq2seq-classify: label sentences with a classifier model, at a prompt or line by line.

    seq2seq-classify model=outputs/.../model                          # prompt (terminal on stdin)
    seq2seq-classify model=... input=reviews.txt output=labels.tsv
    cat reviews.txt | seq2seq-classify model=... > labels.tsv

Output: one `label<TAB>probability` row per input line, in input order (the probability of that
label, the most probable one). An empty input line has nothing to classify: it gives an empty
output line, so the output stays aligned with the input, and a count of them on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.prompt import on_off, run_prompt
from seq2seq.text import line_chunks, open_input, open_output

# The model code (torch) is imported when a model is loaded, not for --help or a bad setting.
if TYPE_CHECKING:
    from seq2seq.tasks.classification.api import Classifier

HELP = """commands:
  :help                 this text
  :all on|off           show every label's probability
  :settings             show the current settings
  :quit                 leave (Ctrl-D and Ctrl-C also do)
Any other line is classified."""

SETTINGS = {"all": ("all_probabilities", on_off)}


def classify_stream(classifier: Classifier, chunks: Iterable[list[str]], out: IO[str],
                    cfg: DictConfig) -> tuple[int, int]:
    """Classify chunk after chunk of lines, writing rows in input order and flushing them before
    the next chunk is read; (lines, empty lines)."""
    from seq2seq.tasks.classification.api import format_row

    done = empty = 0
    for chunk in chunks:
        for prediction in classifier.classify(chunk, batch_tokens=cfg.batch_tokens):
            out.write(format_row(prediction) + "\n")
            empty += prediction is None
        out.flush()
        done += len(chunk)
    return done, empty


def classify_file(classifier: Classifier, cfg: DictConfig) -> None:
    with open_input(cfg.input) as (source, name), open_output(cfg.output) as out:
        _, empty = classify_stream(classifier, line_chunks(source, name, max(1, cfg.chunk_lines)), out, cfg)
    if empty:
        print(f"note: {empty} empty input line{'s' if empty > 1 else ''} got an empty output line", file=sys.stderr)


def interactive(classifier: Classifier, cfg: DictConfig) -> None:
    """A read-classify-print loop with line editing and history (readline)."""
    options = {"all_probabilities": bool(cfg.all_probabilities)}

    def respond(line: str) -> None:
        prediction = classifier.classify([line])[0]
        if prediction is None:
            print("(empty line: type a sentence to classify, or :help)")
        elif options["all_probabilities"]:
            print("  ".join(f"{label} {p:.4f}" for label, p in prediction.probabilities.items()))
        else:
            print(f"{prediction.label} {prediction.probability:.4f}")

    run_prompt(f"seq2seq-classify: {cfg.model} ({classifier.device}; labels: {', '.join(classifier.labels)}). "
               "Type a sentence, or :help.", ".seq2seq_classify_history", options, SETTINGS, HELP, respond)


@run_as_command
def classify(cfg: DictConfig) -> None:
    if cfg.model is None:
        raise UserError("model= is required: the path of a classifier model directory (a run's 'model' folder)")
    if not isinstance(cfg.batch_tokens, int) or cfg.batch_tokens <= 0:
        raise UserError(f"batch_tokens={cfg.batch_tokens} must be a positive whole number")
    from seq2seq.tasks.classification.api import Classifier

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


@hydra_command(APPS_CONF_DIR, "classify")
def main(cfg: DictConfig) -> None:
    classify(cfg)


if __name__ == "__main__":
    main()
