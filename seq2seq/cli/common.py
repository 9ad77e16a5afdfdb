"""What every command shares: where the configs live and how errors reach the user."""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from seq2seq.errors import UserError
from seq2seq.runtime import reuse_freed_memory

# conf/ sits beside the package in a source checkout (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# Primary configs of the commands that load a model directory. They live apart from the
# training groups so that `model=<path>` is a plain value there, not the `model/` config group.
APPS_CONF_DIR = str(Path(CONF_DIR) / "apps")


def debug_enabled() -> bool:
    return os.environ.get("SEQ2SEQ_DEBUG", "") not in ("", "0")


def run_as_command(task: Callable) -> Callable:
    """What every command does around its work.

    First malloc is set to keep freed memory for reuse (seq2seq.runtime: about 10% faster CPU
    training, 20% faster beam search). Then a UserError becomes one line on stderr and exit 2,
    Ctrl-C exit 130; SEQ2SEQ_DEBUG=1 shows tracebacks.
    """

    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        reuse_freed_memory()
        try:
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


@contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a temporary file beside `path` renamed into place only on success."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    if target.is_dir():
        raise UserError(f"output={path} is a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.",
                                             delete=False)
    except OSError as error:
        raise UserError(f"output={path}: cannot write there ({error.strerror or error})") from None
    try:
        with handle:
            yield handle
    except BaseException as error:
        os.unlink(handle.name)
        if isinstance(error, OSError) and not isinstance(error, BrokenPipeError):
            # e.g. the disk filled up: nothing half-written is left, and the old file is untouched
            raise UserError(f"output={path}: writing failed ({error.strerror or error}); nothing was written") from None
        raise
    os.replace(handle.name, target)


@contextmanager
def line_editing(history_name: str) -> Iterator[None]:
    """readline editing for input(), with history kept in ~/<history_name> across sessions."""
    try:
        import readline
    except ImportError:  # not on every platform; input() still works without it
        yield
        return
    history = Path.home() / history_name
    try:
        if history.is_file():
            readline.read_history_file(history)
    except OSError:
        pass
    try:
        yield
    finally:
        try:
            readline.write_history_file(history)
        except OSError:
            pass


def on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(value)
    return value == "on"


USAGE = {int: "N", float: "X", on_off: "on|off", str: "TEXT"}


def run_prompt_command(line: str, options: dict, settings: dict[str, tuple[str, Callable]], help_text: str) -> bool:
    """Apply an interactive `:command` to `options`; False means quit.

    `settings` maps a command name to the option it sets and the parser of its value.
    """
    name, _, value = line[1:].partition(" ")
    name, value = name.strip().lower(), value.strip()
    if name in ("quit", "q", "exit"):
        return False
    if name == "help":
        print(help_text)
    elif name == "settings":
        print(" ".join(f"{key}={options[key]!r}" if isinstance(options[key], str) else f"{key}={options[key]}"
                       for key, _ in settings.values()))
    elif name in settings:
        key, parse = settings[name]
        try:
            options[key] = parse(value)
        except ValueError:
            print(f"(usage: :{name} {USAGE.get(parse, 'VALUE')})")
        else:
            print(f"{key}={options[key]}")
    else:
        print(f"(unknown command :{name}; :help lists them)")
    return True
