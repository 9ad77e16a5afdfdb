"""What every command does around its work: its command line read, memory settings, and errors as one line."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from seq2seq.command_line import check_overrides, free_text_arguments
from seq2seq.errors import UserError


def debug_enabled() -> bool:
    return os.environ.get("SEQ2SEQ_DEBUG", "") not in ("", "0")


def run_as_command(task: Callable | None = None, *, memory: str = "decoding") -> Callable:
    """What every command does around its work; `@run_as_command` or `@run_as_command(memory=...)`.

    First malloc is set to keep freed memory for reuse (seq2seq.runtime: faster CPU training and
    beam search, README "Benchmarks"; `memory="training"` bounds what a long run keeps). Then a
    UserError becomes one line on stderr and exit 2, Ctrl-C exit 130; SEQ2SEQ_DEBUG=1 shows
    tracebacks.
    """
    if task is None:
        return functools.partial(run_as_command, memory=memory)

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        from seq2seq.runtime import reuse_freed_memory  # imports torch: not before the work starts

        try:
            reuse_freed_memory(memory)
            return task(*args, **kwargs)
        except UserError as error:
            if debug_enabled():
                raise
            logging.shutdown()
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            print("\ninterrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def hydra_command(config_path: str, config_name: str, *, free_text: tuple[str, ...] = (),
                  free_text_lists: tuple[str, ...] = ()) -> Callable:
    """`@hydra.main` with the command line prepared first (seq2seq.command_line): the `free_text`
    settings take any text as typed (`free_text_lists` ones may be repeated), and an argument
    that Hydra's grammar cannot take is one line on stderr and exit 2, not Hydra's traceback."""
    import hydra

    import seq2seq.config  # noqa: F401  (registers the configs derived from code)

    def decorate(job: Callable) -> Callable:
        hydra_main = hydra.main(config_path=config_path, config_name=config_name, version_base="1.3")(job)

        @functools.wraps(job)
        def main():
            arguments = free_text_arguments(sys.argv[1:], free_text, free_text_lists)
            try:
                check_overrides(arguments)
            except UserError as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)
            sys.argv[1:] = arguments
            return hydra_main()

        return main

    return decorate
