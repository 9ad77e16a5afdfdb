"""Reading and writing text: UTF-8 lines of files and stdin, whole files, outputs written
atomically, and the cp1252 repair of mis-decoded text. Every error is one line naming the file."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from seq2seq.errors import UserError

log = logging.getLogger(__name__)


def checked_input_path(path: str | os.PathLike) -> Path:
    """`path` as a Path, or a one-line error when it is missing or a directory."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    return path


@contextmanager
def open_input(spec: str) -> Iterator[tuple[IO[bytes], str]]:
    """The binary stream named by `spec` (`-` is stdin, anything else a file) and its name for errors."""
    if spec == "-":
        yield sys.stdin.buffer, "<stdin>"
        return
    path = checked_input_path(spec)
    try:
        handle = open(path, "rb")
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    with handle:
        yield handle, str(path)


def decode_utf8(data: bytes, name: str) -> str:
    """`data` as text; a bad byte is a one-line error naming its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{name}:{line}: invalid UTF-8 (byte {error.start} of the file)") from None


def read_utf8_lines(handle: IO[bytes], name: str) -> Iterator[str]:
    """Lines of a binary stream, decoded, without line endings; invalid UTF-8 names the line.

    The one line reader behind every file, corpus and stdin the package reads.
    """
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise UserError(f"{name}:{number}: invalid UTF-8 (byte {error.start} of the line)") from None


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file, without line endings.

    Refuses missing files, directories, empty files and invalid UTF-8, naming the file and line.
    """
    with open_input(str(checked_input_path(path))) as (handle, name):
        lines = list(read_utf8_lines(handle, name))
    if not lines:
        raise UserError(f"{path}: file is empty")
    return lines


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Aligned source and target lines; different line counts are an error."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
            "parallel files must be aligned line by line"
        )
    return src, tgt


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 text file; a bad byte names its line."""
    path = checked_input_path(path)
    return decode_utf8(path.read_bytes(), str(path))


def _cp1252_repairs() -> dict[int, str]:
    # Text decoded as ISO-8859-1 where it was Windows-1252 turns the curly quotes and dashes
    # (bytes 0x80-0x9f) into C1 control characters (U+0080-U+009F), which no real text holds.
    # Five bytes (0x81, 0x8d, 0x8f, 0x90, 0x9d) are unassigned in cp1252 and stay as they are.
    repairs = {}
    for code in range(0x80, 0xA0):
        try:
            repairs[code] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            continue
    return repairs


CP1252_REPAIRS = _cp1252_repairs()  # e.g. U+0092 -> ’, U+0096 -> –, U+0097 -> —


def repair_cp1252(line: str) -> str:
    """`line` with the cp1252 control characters replaced by the characters they stood for."""
    return line.translate(CP1252_REPAIRS)


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


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` lines (the last may be shorter)."""
    chunk = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
