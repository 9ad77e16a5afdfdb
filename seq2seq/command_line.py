"""Command-line settings before Hydra reads them: free text taken as typed, and grammar errors as one line.

Hydra reads every `key=value` argument with its override grammar, where commas make sweeps, and
quotes, brackets, colons, `$` and `=` have meanings of their own. A prompt is text, not grammar:
the settings a command names as free text (`prompt=...`, `stop=...`) are therefore quoted for
Hydra here, so that the value the command sees is exactly the text of the argument. Every other
argument goes to Hydra as it is; one that Hydra's grammar cannot take ends the command with a
one-line message that shows how to pass it.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Sequence

from seq2seq.errors import UserError

# Options of Hydra's command line whose next argument is their value, not an override.
HYDRA_OPTIONS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                            "--config-dir", "-cd", "--experimental-rerun"}
MULTIRUN_FLAGS = {"-m", "--multirun"}


def omegaconf_literal(text: str) -> str:
    """`text` written so that OmegaConf reads it back unchanged: `${` is an interpolation to it,
    unless escaped as `\\${`, and backslashes just before an escaped `${` are doubled."""
    return re.sub(r"(\\*)\$\{", lambda match: match.group(1) * 2 + "\\${", text)


def hydra_quoted(value: str, quote: str = "'") -> str:
    """`value` as a quoted string of Hydra's override grammar. Inside quotes, a backslash is itself
    except just before the quote character or at the end, where backslashes come in escaped pairs."""
    escaped = re.sub(rf"(\\+)(?={quote}|\Z)", lambda match: match.group(1) * 2, value)
    return quote + escaped.replace(quote, "\\" + quote) + quote


def quote_text(text: str) -> str:
    """Free text as an override value that Hydra and OmegaConf read back as exactly `text`."""
    return hydra_quoted(omegaconf_literal(text))


def ansi_c_quoted(word: str) -> str:
    """`word` in the shell's $'...' quoting, which writes control characters (a newline) as escapes
    and so keeps the word on one line."""
    def escape(char: str) -> str:
        if char in "\\'":
            return "\\" + char
        if unicodedata.category(char) == "Cc":
            return f"\\x{ord(char):02x}" if ord(char) < 0x80 else f"\\u{ord(char):04x}"
        return char

    return "$'" + "".join(escape(char) for char in word) + "'"


def quoted_argument(key: str, value: str) -> str:
    """`key=value` as one shell word, on one line, that Hydra reads as the text `value`."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        return ansi_c_quoted(key + "=" + quote_text(value))
    if "'" not in value:
        return "'" + key + "=" + hydra_quoted(omegaconf_literal(value), '"') + "'"
    argument = key + "=" + quote_text(value)
    if not any(char in argument for char in '"$`\\!'):
        return '"' + argument + '"'
    return shlex.quote(argument)


def free_text_arguments(argv: Sequence[str], free_text: Sequence[str] = (),
                        free_text_lists: Sequence[str] = ()) -> list[str]:
    """The command-line arguments with every `key=TEXT` of a free-text key quoted for Hydra.

    `free_text` keys take one text; a `free_text_lists` key may be repeated (`stop=A stop=B`), and
    its texts become one list, in order, at the place of its first argument.
    """
    result: list[str] = []
    list_values: dict[str, list[str]] = {}
    list_slots: dict[str, int] = {}
    takes_value = False
    for argument in argv:
        if takes_value or argument.startswith("-"):
            takes_value = argument in HYDRA_OPTIONS_WITH_VALUE
            result.append(argument)
            continue
        key, equals, text = argument.partition("=")
        if equals and key in free_text:
            result.append(f"{key}={quote_text(text)}")
        elif equals and key in free_text_lists:
            if key not in list_values:
                list_slots[key] = len(result)
                list_values[key] = []
                result.append("")
            list_values[key].append(text)
        else:
            result.append(argument)
    for key, texts in list_values.items():
        result[list_slots[key]] = f"{key}=[{','.join(quote_text(text) for text in texts)}]"
    return result


def check_overrides(argv: Sequence[str]) -> None:
    """Raise a one-line UserError for the first override that Hydra's grammar cannot take, or that
    it would read as a sweep although no --multirun was asked for."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    multirun = any(argument in MULTIRUN_FLAGS for argument in argv)
    takes_value = False
    for argument in argv:
        if takes_value or argument.startswith("-"):
            takes_value = argument in HYDRA_OPTIONS_WITH_VALUE
            continue
        key, _, value = argument.partition("=")
        try:
            override = parser.parse_override(argument)
        except HydraException:
            raise UserError(f"cannot read the setting {argument!r}: Hydra's override grammar does not "
                            f"take this value as typed; quote the value inside the argument: "
                            f"{quoted_argument(key, value)}") from None
        if override.is_sweep_override() and not multirun:
            raise UserError(f"the setting {argument!r} reads as a sweep of several values (the commas); "
                            f"for one text, quote the value inside the argument: "
                            f"{quoted_argument(key, value)}; to sweep, add --multirun")
