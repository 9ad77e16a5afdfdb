"""The commands on an exported directory, without Hydra: seq2seq-translate, -evaluate, -generate and
-classify read `key=value` settings here when model= names an exported directory
(seq2seq.cli.dispatch sends them). The settings are those of the PyTorch commands that apply
to an exported model; others are refused in one line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from seq2seq.errors import UserError
from seq2seq.tasks.translation.options import OPTION_NAMES, prompt_help, prompt_settings

# Every command: its settings and their defaults (None: unset).
COMMON = {"model": None, "threads": 0, "device": "auto", "precision": "auto"}
TRANSLATE = COMMON | {"input": None, "output": None, "chunk_lines": 2000, "max_input_pieces": 400} | {
    name: None for name in OPTION_NAMES}
EVALUATE = COMMON | {"src": None, "ref": None, "output": None, "json": None, "min_bleu": None} | {
    name: None for name in OPTION_NAMES}
GENERATE = COMMON | {"prompt": "", "max_chars": 500, "num_samples": 1, "temperature": 0.8, "top_k": 0,
                     "top_p": 1.0, "greedy": False, "seed": None, "stop": [], "output": None}
CLASSIFY = COMMON | {"input": None, "output": None, "batch_tokens": 4000}


def scalar(text: str) -> Any:
    """A setting's value as typed: null, true/false, an integer, a number, else the text."""
    lowered = text.lower()
    if lowered in ("null", "none", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise UserError(f"{text!r} is not a list (write it as JSON: [\"a\", \"b\"])") from None
    return text


def parse_settings(command: str, argv: Sequence[str], known: dict[str, Any]) -> dict[str, Any]:
    settings = dict(known)
    for argument in argv:
        key, equals, value = argument.partition("=")
        key = key.lstrip("+")
        if not equals:
            raise UserError(f"{command}: expected key=value, got {argument!r}")
        if key not in known:
            raise UserError(f"{command}: unknown setting {key!r} for an exported model; known: {', '.join(known)}")
        settings[key] = scalar(value)
    if not settings["model"]:
        raise UserError(f"{command}: model= is required (an exported directory)")
    if not isinstance(settings["threads"], int) or settings["threads"] < 0:
        raise UserError(f"threads={settings['threads']!r} must be 0 (onnxruntime's choice) or a positive integer")
    return settings


def load_exported(settings: dict[str, Any], task: str):
    from seq2seq.portable import load

    if settings["device"] not in ("auto", "cpu"):
        raise UserError(f"device={settings['device']!r}: exported models run on the CPU (onnxruntime)")
    model = load(settings["model"], threads=settings["threads"] or None)
    if settings["precision"] not in ("auto", model.precision):
        raise UserError(f"precision={settings['precision']!r}: {settings['model']} was exported in "
                        f"{model.precision}; export again with precision={settings['precision']}")
    if model.directory.task != task:
        raise UserError(f"{settings['model']} holds an exported {model.directory.task} model; this command "
                        f"needs a {task} model")
    return model


def translate(argv: Sequence[str]) -> None:
    from seq2seq.prompt import run_prompt
    from seq2seq.text import line_chunks, open_input, open_output

    settings = parse_settings("seq2seq-translate", argv, TRANSLATE)
    translator = load_exported(settings, "translation")
    options = translator.options(**{name: settings[name] for name in OPTION_NAMES})
    limit = settings["max_input_pieces"]

    def clipped(line: str, number: int) -> str:
        ids = translator.src_tokenizer.encode([line])[0]
        if limit > 0 and len(ids) > limit:
            print(f"warning: line {number} has {len(ids)} pieces; translating the first {limit} "
                  "(max_input_pieces)", file=sys.stderr)
            return translator.src_tokenizer.decode([ids[:limit]])[0]
        return line

    if settings["input"] is None and sys.stdin.isatty():
        current = options.as_dict()

        def respond(line: str) -> None:
            line = line.strip()
            if not line:
                print("(empty line: type a sentence to translate, or :help)")
                return
            hyps = translator.translate([line], return_hypotheses=True, **current)[0]
            for rank, hyp in enumerate(hyps):
                print(f"{rank}\t{hyp.score:.4f}\t{hyp.text}" if current["nbest"] > 1 else hyp.text)

        help_text = "\n".join(["commands:", "  :help                 this text", prompt_help(),
                               "  :settings             show the current settings",
                               "  :quit                 leave (Ctrl-D and Ctrl-C also do)"])
        run_prompt(f"seq2seq-translate: {settings['model']} (exported, onnxruntime). Type a sentence, or :help.",
                   ".seq2seq_translate_history", current, prompt_settings(), help_text, respond)
        return
    done = 0
    with open_input(settings["input"] or "-") as (source, name), open_output(settings["output"]) as out:
        for chunk in line_chunks(source, name, max(1, settings["chunk_lines"])):
            chunk = [clipped(line, done + offset + 1) for offset, line in enumerate(chunk)]
            for offset, hyps in enumerate(translator.translate(chunk, options, return_hypotheses=True)):
                if options.nbest > 1:
                    out.write("".join(f"{done + offset}\t{rank}\t{h.score:.4f}\t{h.text}\n"
                                      for rank, h in enumerate(hyps)))
                else:
                    out.write(hyps[0].text + "\n")
            out.flush()
            done += len(chunk)


def evaluate(argv: Sequence[str]) -> None:
    from seq2seq.metrics import format_scores, score_corpus
    from seq2seq.text import open_output, read_lines

    settings = parse_settings("seq2seq-evaluate", argv, EVALUATE)
    if settings["src"] is None or settings["ref"] is None:
        raise UserError("src= and ref= are required: the source file and its reference translations")
    min_bleu = settings["min_bleu"]
    if min_bleu is not None and not isinstance(min_bleu, (int, float)):
        raise UserError(f"min_bleu={min_bleu!r} must be a number (a BLEU score, e.g. min_bleu=30)")
    start = time.perf_counter()
    translator = load_exported(settings, "translation")
    options = translator.options(**{name: settings[name] for name in OPTION_NAMES})
    data_dir = (translator.directory.config.get("data") or {}).get("data_dir")

    def resolved(name: str) -> Path:  # as the PyTorch command: relative names also in the training data folder
        path = Path(str(name))
        if not path.exists() and not path.is_absolute() and data_dir and (Path(data_dir) / path).exists():
            return Path(data_dir) / path
        return path

    src_lines, ref_lines = read_lines(resolved(settings["src"])), read_lines(resolved(settings["ref"]))
    if len(src_lines) != len(ref_lines):
        raise UserError(f"{settings['src']} has {len(src_lines)} lines but {settings['ref']} has {len(ref_lines)}")
    loaded = time.perf_counter()
    hyps = translator.translate(src_lines, options)
    decoded = time.perf_counter()
    scores = score_corpus(hyps, ref_lines)
    print(format_scores(scores))
    print(f"{len(src_lines)} sentences decoded in {decoded - loaded:.2f} s (beam {options.beam}, onnxruntime)",
          file=sys.stderr)
    if settings["output"]:
        with open_output(settings["output"]) as out:
            out.write("\n".join(hyps) + "\n")
    if settings["json"]:
        result = {name: s.as_dict() for name, s in scores.items()} | {
            "model": str(settings["model"]), "src": str(settings["src"]), "ref": str(settings["ref"]),
            "runtime": "onnxruntime", "precision": translator.precision, "beam": options.beam,
            "shortlist": options.shortlist, "sentences": len(src_lines),
            "decode_seconds": round(decoded - loaded, 3), "total_seconds": round(decoded - start, 3)}
        with open_output(settings["json"]) as out:
            out.write(json.dumps(result, indent=2) + "\n")
    if min_bleu is not None and scores["bleu"].score < min_bleu:
        print(f"error: BLEU {scores['bleu'].score:.2f} is below min_bleu={min_bleu}", file=sys.stderr)
        sys.exit(1)


def generate(argv: Sequence[str]) -> None:
    from seq2seq.text import open_output

    settings = parse_settings("seq2seq-generate", argv, GENERATE)
    generator = load_exported(settings, "language_model")
    stop = settings["stop"] if isinstance(settings["stop"], list) else [settings["stop"]]
    stops = [str(s).replace("\\n", "\n") for s in stop if s]
    options = {key: settings[key] for key in ("temperature", "top_k", "top_p", "greedy", "seed")}
    prompt = str(settings["prompt"] or "")
    with open_output(settings["output"]) as out:
        if settings["num_samples"] == 1:  # one sample is printed as it is drawn
            out.write(prompt)
            for pieces in generator.stream(prompt, settings["max_chars"], 1, stop=stops, **options):
                out.write(pieces[0])
                out.flush()
            out.write("\n")
            return
        texts = generator.generate(prompt, settings["max_chars"], settings["num_samples"], stop=stops, **options)
        for number, text in enumerate(texts, 1):
            out.write(f"--- sample {number}\n{prompt}{text}\n")


def classify(argv: Sequence[str]) -> None:
    from seq2seq.text import open_input, open_output

    settings = parse_settings("seq2seq-classify", argv, CLASSIFY)
    classifier = load_exported(settings, "classification")
    with open_input(settings["input"] or "-") as (source, name), open_output(settings["output"]) as out:
        from seq2seq.text import line_chunks

        for chunk in line_chunks(source, name, 2000):
            for prediction in classifier.classify(chunk, settings["batch_tokens"]):
                out.write("" if prediction is None else f"{prediction.label}\t{prediction.probability:.4f}")
                out.write("\n")
            out.flush()


def serve_settings() -> dict[str, Any]:
    """seq2seq-serve's settings: the server's limits (ServeSettings, with their defaults) and where
    it listens; the API key from SEQ2SEQ_API_KEY unless api_key= is given."""
    from dataclasses import fields

    from seq2seq.serving.app import ServeSettings

    limits = {spec.name: spec.default for spec in fields(ServeSettings)}
    limits["api_key"] = os.environ.get("SEQ2SEQ_API_KEY")
    return COMMON | {"host": "127.0.0.1", "port": 8000, "log_level": "info"} | limits


def serve(argv: Sequence[str]) -> None:
    try:
        from seq2seq.serving.app import ServeSettings  # noqa: F401  (FastAPI and the rest, checked here)
        from seq2seq.serving.server import SETTINGS, run_server
    except ModuleNotFoundError as error:
        raise UserError(f"seq2seq-serve needs the server's packages ({error.name} is missing): "
                        "pip install 'seq2seq-runtime[serve]'") from None

    settings = parse_settings("seq2seq-serve", argv, serve_settings())
    entries = model_entries(str(settings["model"]))
    for _, path in entries:
        if not is_exported_path(path):
            raise UserError(f"{path} is not an exported directory; serving PyTorch model directories needs the "
                            "full install")
    if settings["device"] not in ("auto", "cpu"):
        raise UserError(f"device={settings['device']!r}: exported models run on the CPU (onnxruntime)")
    run_server(entries, {name: settings[name] for name in SETTINGS}, settings["host"], settings["port"],
               settings["log_level"], settings["threads"])


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "translate": translate, "evaluate": evaluate, "generate": generate, "classify": classify, "serve": serve}


def run(command: str, argv: Sequence[str]) -> None:
    """Run one command; a UserError is one line on stderr and exit 2, as with the PyTorch commands."""
    if any(arg in ("-h", "--help") for arg in argv):
        known = {"translate": TRANSLATE, "evaluate": EVALUATE, "generate": GENERATE, "classify": CLASSIFY,
                 "serve": serve_settings()}[command]
        print(f"seq2seq-{command} model=EXPORTED_DIR [key=value ...]\nsettings: " + ", ".join(
            f"{key}={'' if value is None else value}" for key, value in known.items()))
        return
    try:
        COMMANDS[command](argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


def model_entries(value: str) -> list[tuple[str | None, str]]:
    """model=DIR, model=[DIR1,DIR2] or model={name:DIR,...} as [(name or None, DIR)]."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        return [(None, part.strip()) for part in value[1:-1].split(",") if part.strip()]
    if value.startswith("{") and value.endswith("}"):
        entries = []
        for part in value[1:-1].split(","):
            name, colon, path = part.partition(":")
            if not colon or not name.strip() or not path.strip():
                raise UserError(f"model={value}: expected {{name:DIR,...}}")
            entries.append((name.strip(), path.strip()))
        return entries
    return [(None, value)]


def is_exported_path(path: str) -> bool:
    from seq2seq.portable.exported import is_exported

    return bool(path) and is_exported(path)


def exported_model(argv: Sequence[str]) -> list[tuple[str | None, str]] | None:
    """The exported directories that a command line's model= names, if it names only those."""
    for argument in argv:
        key, equals, value = argument.partition("=")
        if equals and key.lstrip("+") == "model" and value:
            try:
                entries = model_entries(value)
            except UserError:
                return None
            return entries if entries and all(is_exported_path(path) for _, path in entries) else None
    return None
