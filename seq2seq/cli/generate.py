"""seq2seq-generate: text from a character language model, streamed as it is written.

    seq2seq-generate model=outputs/.../model prompt="ROMEO:" max_chars=500 temperature=0.8 top_p=0.95 seed=1
    seq2seq-generate model=outputs/.../model                      # interactive prompt
    cat opening.txt | seq2seq-generate model=outputs/.../model    # stdin is the prompt
    cat prompts.txt | seq2seq-generate model=... lines=true      # a prompt a line, answered as it arrives

The prompt is printed, then its continuation. With num_samples > 1 the samples are drawn as
one batch and printed one after another under a `--- sample N ---` line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.prompt import on_off, run_prompt
from seq2seq.text import decode_utf8, line_chunks, open_input

# The model code (torch) is imported when a model is loaded, not for --help or a bad setting.
if TYPE_CHECKING:
    from seq2seq.tasks.language_model.api import Generator

HELP = """commands:
  :help                 this text
  :max_chars N          characters per sample
  :samples N            samples per prompt
  :temperature X  :top_k N  :top_p X   sampling settings
  :greedy on|off        most probable character instead of sampling
  :seed N               reproducible samples (:seed -1 turns it off)
  :stop TEXT            stop before TEXT (\\n for a newline; :stop with nothing clears it)
  :settings             show the current settings
  :quit                 leave (Ctrl-D also does; Ctrl-C stops a sample, or leaves at the prompt)
Any other line is a prompt for the model to continue."""


def unescape(text: str) -> str:
    """\\n and \\t typed on a command line or at the prompt mean a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def stop_list(value: str) -> list[str]:
    return [unescape(value)] if value else []


def optional_seed(value: str) -> int | None:
    seed = int(value)
    return None if seed < 0 else seed


SETTINGS = {
    "max_chars": ("max_chars", int), "samples": ("num_samples", int), "temperature": ("temperature", float),
    "top_k": ("top_k", int), "top_p": ("top_p", float), "greedy": ("greedy", on_off),
    "seed": ("seed", optional_seed), "stop": ("stop", stop_list),
}


def generation_options(cfg: DictConfig) -> dict:
    stop = OmegaConf.to_container(cfg.stop) if OmegaConf.is_list(cfg.stop) else cfg.stop
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    return {"max_chars": cfg.max_chars, "num_samples": cfg.num_samples, "temperature": cfg.temperature,
            "top_k": cfg.top_k, "top_p": cfg.top_p, "greedy": cfg.greedy, "seed": cfg.seed,
            "stop": [unescape(str(s)) for s in stop]}


def write_samples(generator: Generator, prompt: str, options: dict, out=None) -> None:
    """Print the prompt and its continuation(s), streaming when there is one sample."""
    out = out or sys.stdout
    options = dict(options)
    samples = options.pop("num_samples")
    if samples == 1:
        out.write(prompt)
        out.flush()
        for pieces in generator.stream(prompt, num_samples=1, **options):
            if pieces[0]:
                out.write(pieces[0])
                out.flush()
        out.write("\n")
        out.flush()
        return
    for number, text in enumerate(generator.generate(prompt, num_samples=samples, **options), start=1):
        out.write(f"--- sample {number} ---\n{prompt}{text}\n")
    out.flush()


def one_line(text: str) -> str:
    """`text` on one line: backslashes doubled, newlines as \\n (read back by `unescape`, less the doubling)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def write_line_samples(generator: Generator, options: dict, out=None) -> int:
    """Every stdin line a prompt: each sample written as one line and flushed as soon as it is
    done, so a program can send a prompt and wait for its answer. The number of prompts."""
    out = out or sys.stdout
    options = dict(options)
    samples = options.pop("num_samples")
    done = 0
    with open_input("-") as (source, name):
        for chunk in line_chunks(source, name, 1):
            for prompt in chunk:
                for text in generator.generate(prompt, num_samples=samples, **options):
                    out.write(one_line(prompt + text) + "\n")
                out.flush()
                done += 1
    return done


def interactive(generator: Generator, cfg: DictConfig) -> None:
    options = generation_options(cfg)
    run_prompt(f"seq2seq-generate: {cfg.model} ({generator.device}). Type a prompt, or :help.",
               ".seq2seq_generate_history", options, SETTINGS, HELP,
               lambda line: write_samples(generator, line, options), interruptible=True)


@run_as_command
def generate(cfg: DictConfig) -> None:
    if cfg.model is None:
        raise UserError("model= is required: the path of a language model directory (a run's 'model' folder)")
    from seq2seq.tasks.language_model.api import Generator

    generator = Generator.load(cfg.model, device=cfg.device, precision=cfg.precision)
    options = generation_options(cfg)
    generator.generate("", **(options | {"max_chars": 0}))  # check the settings before reading input
    if cfg.lines:
        if cfg.prompt is not None:
            raise UserError("lines=true reads the prompts from stdin, one a line; leave prompt= unset")
        try:
            write_line_samples(generator, options)
        except BrokenPipeError:
            sys.stderr.close()
        return
    if cfg.prompt is None and sys.stdin.isatty():
        interactive(generator, cfg)
        return
    prompt = decode_utf8(sys.stdin.buffer.read(), "<stdin>") if cfg.prompt is None else str(cfg.prompt)
    try:
        write_samples(generator, prompt, options)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()


@hydra_command(APPS_CONF_DIR, "generate", free_text=("prompt",), free_text_lists=("stop",))
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()
