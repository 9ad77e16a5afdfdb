"""seq2seq-evaluate: translate a source file and score it with sacreBLEU; optionally gate on BLEU.
For a language model: the loss on a text in nats/char, bits/char and perplexity.

    seq2seq-evaluate model=outputs/.../model src=test_2016_flickr.de ref=test_2016_flickr.en beam=5 min_bleu=30
    seq2seq-evaluate 'model=[run1/model,run2/model]' src=... ref=...           # an ensemble
    seq2seq-evaluate model=... src=... ref=... score_ref=true > ref.scores     # log P(ref | src) per line
    seq2seq-evaluate 'systems=[run1/model,averaged,[run1/model,run2/model],hyps.en]' src=... ref=...
    seq2seq-evaluate model=outputs/.../model text=held_out.txt

Relative `src`/`ref` paths are looked up in the current directory first, then in the data
folder the model was trained from. Exit status: 0 on success, 1 when BLEU is below `min_bleu`,
2 on a user error."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from seq2seq.bundle import read_bundle_config
from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.metrics import compare_systems, format_comparison, format_scores, score_corpus
from seq2seq.tasks.language_model.api import MODEL_TYPE as GENERATOR_MODEL_TYPE
from seq2seq.tasks.language_model.api import Generator
from seq2seq.tasks.translation.api import Translator
from seq2seq.tasks.translation.options import OPTION_NAMES
from seq2seq.text import open_output, read_lines, read_text


def resolve_input(name: str, model_config: dict) -> Path:
    path = Path(name)
    if path.exists() or path.is_absolute():
        return path
    data_dir = model_config.get("data", {}).get("data_dir")
    if data_dir and (Path(data_dir) / name).exists():
        return Path(data_dir) / name
    return path  # read_lines reports it as missing


def evaluate_language_model(cfg: DictConfig) -> dict:
    if cfg.src is not None or cfg.ref is not None:
        raise UserError(f"{cfg.model} is a language model: score it with text=FILE (src=/ref= are for translation)")
    if cfg.text is None:
        raise UserError("text= is required for a language model: the text file to score")
    start = time.perf_counter()
    generator = Generator.load(cfg.model, device=cfg.device, precision=cfg.precision)
    text = read_text(resolve_input(cfg.text, generator.bundle.config))
    report = generator.score(text, streams=cfg.streams)
    seconds = time.perf_counter() - start
    result = report | {"model": str(cfg.model), "text": str(cfg.text), "seconds": round(seconds, 3)}
    print(f"nats/char   {report['nats_per_char']:.4f}\nbits/char   {report['bits_per_char']:.4f}\n"
          f"perplexity  {report['perplexity']:.4f}")
    unknown = f", {report['unknown']:,} unknown to the model" if report["unknown"] else ""
    print(f"{report['chars']:,} characters scored{unknown} in {seconds:.2f} s", file=sys.stderr)
    if cfg.json:
        with open_output(cfg.json) as out:
            out.write(json.dumps(result, indent=2) + "\n")
    return result


def model_paths(value) -> list[str]:
    """`model=dir` or `model=[dir1,dir2]` (an ensemble) -> the directories."""
    return [str(v) for v in value] if isinstance(value, (list, ListConfig)) else [str(value)]


def decode_options(cfg: DictConfig) -> dict:
    """The decoding options set on the command line (None: the model's default)."""
    return {name: cfg.get(name) for name in OPTION_NAMES}


def read_pair(cfg: DictConfig, model_config: dict) -> tuple[Path, list[str], Path, list[str]]:
    if cfg.src is None or cfg.ref is None:
        raise UserError("src= and ref= are required: the source file to translate and its reference")
    src_path, ref_path = resolve_input(cfg.src, model_config), resolve_input(cfg.ref, model_config)
    src_lines, ref_lines = read_lines(src_path), read_lines(ref_path)
    if len(src_lines) != len(ref_lines):
        raise UserError(f"{src_path} has {len(src_lines)} lines but {ref_path} has {len(ref_lines)}")
    return src_path, src_lines, ref_path, ref_lines


def write_json(cfg: DictConfig, result: dict) -> None:
    if cfg.json:
        with open_output(cfg.json) as out:
            out.write(json.dumps(result, indent=2) + "\n")


def score_references(cfg: DictConfig, translator: Translator, batch_tokens: int) -> dict:
    """log P(ref | src) per sentence (forced decoding), one per line on stdout or in output=."""
    src_path, src_lines, ref_path, ref_lines = read_pair(cfg, translator.bundle.config)
    start = time.perf_counter()
    scores = translator.score(src_lines, ref_lines, batch_tokens=batch_tokens)
    seconds = time.perf_counter() - start
    pieces = sum(len(ids) + 1 for ids in translator.tgt_tokenizer.encode(ref_lines))  # + EOS each
    total = sum(scores)
    with open_output(cfg.output) as out:
        out.write("".join(f"{score:.4f}\n" for score in scores))
    print(f"{len(scores)} references scored in {seconds:.2f} s: log-probability {total:.2f} in all, "
          f"{total / max(pieces, 1):.4f} per piece ({pieces:,} pieces with EOS), "
          f"perplexity {math.exp(-total / max(pieces, 1)):.3f}", file=sys.stderr)
    result = {"model": model_paths(cfg.model), "src": str(src_path), "ref": str(ref_path),
              "log_probabilities": scores, "total": total, "pieces": pieces, "seconds": round(seconds, 3)}
    write_json(cfg, result)
    return result


def compare(cfg: DictConfig) -> dict:
    """Translate with (or read the translations of) each system and test each against the first."""
    entries = list(cfg.systems)
    if len(entries) < 2:
        raise UserError("systems= needs at least two systems: a baseline and one to compare with it")
    first_model = next((model_paths(e)[0] for e in entries if Path(model_paths(e)[0]).is_dir()), None)
    model_config = read_bundle_config(first_model) if first_model else {}
    src_path, src_lines, ref_path, ref_lines = read_pair(cfg, model_config)
    named, timings, beams = [], {}, {}
    for entry in entries:
        paths = model_paths(entry)
        name = "+".join(paths)
        if len(paths) == 1 and Path(paths[0]).is_file():
            hyps = read_lines(Path(paths[0]))
            if len(hyps) != len(ref_lines):
                raise UserError(f"{paths[0]} has {len(hyps)} lines but {ref_path} has {len(ref_lines)}")
        else:
            translator = Translator.load(paths, device=cfg.device, precision=cfg.precision)
            options = translator.options(**decode_options(cfg))
            start = time.perf_counter()
            hyps = translator.translate(src_lines, options)
            timings[name] = round(time.perf_counter() - start, 3)
            print(f"{name}: {len(src_lines)} sentences decoded in {timings[name]:.2f} s (beam {options.beam})",
                  file=sys.stderr)
            beams[name] = options.beam
        named.append((name, hyps))
    report = compare_systems(named, ref_lines, bootstrap_samples=cfg.bootstrap_samples, ar_trials=cfg.ar_trials)
    print(format_comparison(report))
    for label, signatures in report["signatures"].items():
        for metric, signature in signatures.items():
            print(f"{label} {metric}: {signature}", file=sys.stderr)
    result = report | {"src": str(src_path), "ref": str(ref_path), "beam": beams,
                       "decode_seconds": timings}
    write_json(cfg, result)
    return result


@run_as_command
def evaluate(cfg: DictConfig) -> dict:
    if cfg.systems is not None:
        if cfg.model is not None:
            raise UserError("give model= (one system, or an ensemble) or systems= (a comparison), not both")
        return compare(cfg)
    if cfg.model is None:
        raise UserError("model= is required: the path of a model directory (a run's 'model' folder)")
    paths = model_paths(cfg.model)
    if read_bundle_config(paths[0]).get("model_type") == GENERATOR_MODEL_TYPE:
        if len(paths) > 1:
            raise UserError("ensembles are for translation models; give one language model")
        return evaluate_language_model(cfg)
    if cfg.text is not None:
        raise UserError("text= scores a language model; for a translation model give src= and ref=")
    if cfg.min_bleu is not None and not isinstance(cfg.min_bleu, (int, float)):
        raise UserError(f"min_bleu={cfg.min_bleu!r} must be a number (a BLEU score, e.g. min_bleu=30)")
    start = time.perf_counter()
    translator = Translator.load(paths, device=cfg.device, precision=cfg.precision)
    options = translator.options(**decode_options(cfg))
    if cfg.score_ref:
        return score_references(cfg, translator, options.batch_tokens)
    src_path, src_lines, ref_path, ref_lines = read_pair(cfg, translator.bundle.config)
    loaded = time.perf_counter()
    hyps = translator.translate(src_lines, options)
    decoded = time.perf_counter()
    scores = score_corpus(hyps, ref_lines)
    result = {name: s.as_dict() for name, s in scores.items()} | {
        "model": paths[0] if len(paths) == 1 else paths, "src": str(src_path), "ref": str(ref_path),
        "beam": options.beam, "length_penalty": options.length_penalty, "shortlist": options.shortlist,
        "sentences": len(src_lines),
        "decode_seconds": round(decoded - loaded, 3), "total_seconds": round(decoded - start, 3)}
    print(format_scores(scores))
    print(f"{len(src_lines)} sentences decoded in {decoded - loaded:.2f} s (beam {options.beam})", file=sys.stderr)
    if cfg.output:
        with open_output(cfg.output) as out:
            out.write("\n".join(hyps) + "\n")
    write_json(cfg, result)
    if cfg.min_bleu is not None and scores["bleu"].score < cfg.min_bleu:
        print(f"error: BLEU {scores['bleu'].score:.2f} is below min_bleu={cfg.min_bleu}", file=sys.stderr)
        sys.exit(1)
    return result


@hydra_command(APPS_CONF_DIR, "evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
