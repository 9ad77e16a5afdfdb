"""The interactive prompt every command opens on a terminal: line editing with history,
`:command` settings, and one read-respond loop."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seq2seq.errors import UserError


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


def run_prompt(banner: str, history_name: str, options: dict, settings: dict[str, tuple[str, Callable]],
               help_text: str, respond: Callable[[str], None], interruptible: bool = False) -> None:
    """Read lines until Ctrl-D or `:quit`: `:command` lines change `options`, any other line goes
    to `respond`. A bad request prints its error and the prompt stays. Ctrl-C leaves, except that
    with `interruptible` it only stops the response under way (e.g. text being generated)."""
    print(banner, file=sys.stderr)
    with line_editing(history_name):
        while True:
            try:
                line = input("> ")
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return
            if line.startswith(":"):
                if not run_prompt_command(line, options, settings, help_text):
                    return
                continue
            try:
                respond(line)
            except UserError as error:
                print(f"(error: {error})")
            except KeyboardInterrupt:
                if not interruptible:
                    print(file=sys.stderr)
                    return
                print("\n(stopped)")
