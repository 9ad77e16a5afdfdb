"""What every command does around its work: memory settings, and errors as one line."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

from seq2seq.errors import UserError


def debug_enabled() -> bool:
    return os.environ.get("SEQ2SEQ_DEBUG", "") not in ("", "0")


def run_as_command(task: Callable | None = None, *, memory: str = "decoding") -> Callable:
    """What every command does around its work; `@run_as_command` or `@run_as_command(memory=...)`.

    First malloc is set to keep freed memory for reuse (seq2seq.runtime: about 10% faster CPU
    training, 20% faster beam search; `memory="training"` bounds what a long run keeps). Then a
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
