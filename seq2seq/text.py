"""Reading and writing text: UTF-8 lines of files and stdin, whole files, outputs written
atomically, and the cp1252 repair of mis-decoded text. Every error is one line naming the file."""

from __future__ import annotations

import logging
import os
import select
import stat
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


def publish(temporary: str | os.PathLike, target: Path) -> None:
    """Rename a finished temporary file into place, with the permissions a plain open() would
    have given it (tempfile creates files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, target)


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
    publish(handle.name, target)


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


def is_stream(handle: IO[bytes]) -> bool:
    """True for a pipe, terminal or socket: input that arrives over time, not a file on disk."""
    try:
        return not stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no file descriptor (e.g. an in-memory stream)
        return False


def arriving_chunks(handle: IO[bytes], name: str, size: int) -> Iterator[list[str]]:
    """Decoded lines of a pipe in lists of what has arrived, each handed on as soon as no more
    input is waiting (or when it holds `size` lines).

    A program that writes one line and waits for its answer gets it at once; a fast writer still
    gets batches of up to `size` lines. Reads the file descriptor directly (select + os.read), so
    nothing waits in Python's read-ahead buffer.
    """
    fd = handle.fileno()
    pending: list[bytes] = []
    partial = b""
    number = 0

    def decoded(raw: list[bytes]) -> list[str]:
        nonlocal number
        lines = []
        for line in raw:
            number += 1
            try:
                lines.append(line.decode("utf-8").rstrip("\r"))
            except UnicodeDecodeError as error:
                raise UserError(f"{name}:{number}: invalid UTF-8 (byte {error.start} of the line)") from None
        return lines

    while True:
        data = os.read(fd, 1 << 16)
        if not data:  # end of input
            if partial:
                pending.append(partial)
            while pending:
                yield decoded(pending[:size])
                pending = pending[size:]
            return
        *complete, partial = (partial + data).split(b"\n")
        pending.extend(complete)
        while len(pending) >= size:
            yield decoded(pending[:size])
            pending = pending[size:]
        if pending and not select.select([fd], [], [], 0)[0]:  # nothing more waiting: answer now
            yield decoded(pending)
            pending = []


def line_chunks(handle: IO[bytes], name: str, size: int) -> Iterator[list[str]]:
    """Lines of `handle` in lists of at most `size`: full lists from a file (they are sorted by
    length into batches), lists of what has arrived from a pipe or terminal (`arriving_chunks`)."""
    if os.name == "posix" and is_stream(handle):
        return arriving_chunks(handle, name, size)
    return chunks(read_utf8_lines(handle, name), size)
