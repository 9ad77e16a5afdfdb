"""seq2seq-translate: an interactive prompt, or files and pipes translated in streaming batches.

    seq2seq-translate model=outputs/.../model                       # prompt (terminal on stdin)
    seq2seq-translate model=... input=news.de output=news.en beam=5
    cat news.de | seq2seq-translate model=... nbest=3 > out.tsv
    seq2seq-translate model=... input=- plot_attention=attn/

Output: one detokenized translation per input line, in input order. With nbest > 1 each input
line gives `nbest` rows `line<TAB>rank<TAB>score<TAB>translation` (line and rank from 0, best
first; score = summed log-probability, length-normalized for beam search)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.prompt import run_prompt
from seq2seq.tasks.translation.options import OPTION_NAMES, DecodingOptions, prompt_settings
from seq2seq.tasks.translation.options import prompt_help as prompt_options_help
from seq2seq.text import checked_input_path, line_chunks, open_input, open_output

# The model code (torch) is imported when a model is loaded, not for --help or a bad setting.
if TYPE_CHECKING:
    from seq2seq.tasks.translation.api import ScoredTranslation, Translator

def prompt_help() -> str:
    return "\n".join(["commands:", "  :help                 this text", prompt_options_help(),
                      "  :settings             show the current settings",
                      "  :quit                 leave (Ctrl-D and Ctrl-C also do)", "Any other line is translated."])


def decoding_settings(cfg: DictConfig) -> dict:
    """The decoding options set on the command line (unset ones are None: the model's default)."""
    return {name: cfg.get(name) for name in OPTION_NAMES}


def format_nbest(line_index: int, hyps: list[ScoredTranslation]) -> str:
    return "".join(f"{line_index}\t{rank}\t{h.score:.4f}\t{h.text}\n" for rank, h in enumerate(hyps))


def clip_long_lines(translator: Translator, lines: list[str], first_line: int, limit: int) -> list[str]:
    """Truncate lines longer than `limit` pieces, warning once per line on stderr."""
    if limit <= 0:
        return lines
    clipped = []
    for offset, line in enumerate(lines):
        pieces = translator.src_tokenizer.encode_pieces(line)
        if len(pieces) > limit:
            print(f"warning: line {first_line + offset + 1} has {len(pieces)} pieces; "
                  f"translating the first {limit} (max_input_pieces)", file=sys.stderr)
            line = translator.src_tokenizer.decode([translator.src_tokenizer.encode([line])[0][:limit]])[0]
        clipped.append(line)
    return clipped


def translate_stream(translator: Translator, chunks: Iterable[list[str]], out: IO[str], cfg: DictConfig,
                     options: DecodingOptions, progress=None) -> int:
    """Translate chunk after chunk of lines, writing each chunk's outputs in input order and
    flushing them before the next chunk is read."""
    plot_dir = Path(cfg.plot_attention) if cfg.plot_attention else None
    if plot_dir is not None:
        from seq2seq.plots import save_attention

        plot_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    for chunk in chunks:
        chunk = clip_long_lines(translator, chunk, done, cfg.max_input_pieces)
        results = translator.translate(chunk, options, return_hypotheses=True,
                                       return_attention=plot_dir is not None)
        for offset, hyps in enumerate(results):
            index = done + offset
            if options.nbest > 1:
                out.write(format_nbest(index, hyps))
            else:
                out.write(hyps[0].text + "\n")
            if plot_dir is not None and hyps[0].attention is not None:
                save_attention(translator.src_tokenizer.encode_pieces(chunk[offset]),
                               translator.tgt_tokenizer.id_to_piece(hyps[0].tokens), chunk[offset], hyps[0],
                               plot_dir / f"{index:06d}")
        out.flush()
        done += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    return done


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def translate_file(translator: Translator, cfg: DictConfig, options: DecodingOptions) -> None:
    total = None if cfg.input == "-" else count_lines(checked_input_path(cfg.input))
    progress = None
    show = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    if show and total is not None:
        from tqdm import tqdm

        progress = tqdm(total=total, unit="line", file=sys.stderr, dynamic_ncols=True)
    try:
        with open_input(cfg.input) as (source, name), open_output(cfg.output) as out:
            translate_stream(translator, line_chunks(source, name, max(1, cfg.chunk_lines)), out, cfg, options,
                             progress)
    finally:
        if progress is not None:
            progress.close()


def interactive(translator: Translator, cfg: DictConfig, chosen: DecodingOptions) -> None:
    """A read-translate-print loop with line editing and history (readline)."""
    options = chosen.as_dict()  # the prompt's commands change these
    limit = cfg.max_input_pieces

    def respond(line: str) -> None:
        line = line.strip()
        if not line:
            print("(empty line: type a sentence to translate, or :help)")
            return
        pieces = translator.src_tokenizer.encode_pieces(line)
        if limit > 0 and len(pieces) > limit:
            print(f"(line too long: {len(pieces)} pieces, the limit is {limit}; split it)")
            return
        hyps = translator.translate([line], return_hypotheses=True, **options)[0]
        if options["nbest"] > 1:
            for rank, h in enumerate(hyps):
                print(f"{rank}\t{h.score:.4f}\t{h.text}")
        else:
            print(hyps[0].text)

    run_prompt(f"seq2seq-translate: {cfg.model} ({translator.device}). Type a sentence, or :help.",
               ".seq2seq_translate_history", options, prompt_settings(), prompt_help(), respond)


@run_as_command
def translate(cfg: DictConfig) -> None:
    if cfg.model is None:
        raise UserError("model= is required: the path of a model directory (a run's 'model' folder)")
    from seq2seq.tasks.translation.api import Translator

    translator = Translator.load(cfg.model, device=cfg.device, precision=cfg.precision)
    # The settings over the model's defaults, checked once, before any input is read.
    options = translator.options(**decoding_settings(cfg))
    if cfg.input is None and sys.stdin.isatty():
        interactive(translator, cfg, options)
        return
    if cfg.input is None:
        cfg.input = "-"
    translate_file(translator, cfg, options)


@hydra_command(APPS_CONF_DIR, "translate")
def main(cfg: DictConfig) -> None:
    translate(cfg)


if __name__ == "__main__":
    main()
