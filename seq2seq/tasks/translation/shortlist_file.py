"""The shortlist file (shortlist.json) read and checked without torch: the PyTorch decoder
(seq2seq.tasks.translation.shortlist) and the exported runtime (seq2seq.portable) share it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seq2seq.errors import UserError
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, file_digest

SHORTLIST_FILE = "shortlist.json"
FORMAT_NAME = "seq2seq-shortlist"
FORMAT_VERSION = 1

# The search bans these itself and they keep their index through SPECIAL_IDS, so a stored list
# holding one is a sign of a file written by something else.
_BANNED = (PAD_ID, BOS_ID, UNK_ID)
SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)


@dataclass
class ShortlistDocument:
    frequent: list[int]  # most frequent first
    rows: list[list[int]]  # per source piece, its target pieces, most probable first
    src_vocab_size: int
    tgt_vocab_size: int
    src_tokenizer_digest: str = ""
    tgt_tokenizer_digest: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def read_shortlist(path: str | os.PathLike, src_tokenizer=None, tgt_tokenizer=None) -> ShortlistDocument:
    """Read and validate a shortlist file; with the model's tokenizers, also check it was built
    for them (same model files, same vocabulary sizes)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: shortlist file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a shortlist file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read the shortlist ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a shortlist file (not UTF-8 text)") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not a shortlist file (invalid JSON at line {error.lineno} "
                        f"column {error.colno}: {error.msg})") from None
    shortlist = _from_document(document, path)
    for side, tokenizer, size, digest in (
        ("source", src_tokenizer, shortlist.src_vocab_size, shortlist.src_tokenizer_digest),
        ("target", tgt_tokenizer, shortlist.tgt_vocab_size, shortlist.tgt_tokenizer_digest),
    ):
        if tokenizer is None:
            continue
        actual = file_digest(tokenizer.model_file)
        if tokenizer.vocab_size != size or actual != digest:
            raise UserError(
                f"{path} was built for another {side} vocabulary ({size} pieces, tokenizer "
                f"{digest or 'unrecorded'}; the model's has {tokenizer.vocab_size} pieces, tokenizer {actual}); "
                "rebuild it with seq2seq-shortlist model=DIR"
            )
    return shortlist


def _from_document(document: Any, path: Path) -> ShortlistDocument:
    def invalid(reason: str) -> UserError:
        return UserError(f"{path}: not a valid shortlist file ({reason})")

    if not isinstance(document, dict):
        raise UserError(f"{path}: not a shortlist file (a JSON {type(document).__name__}, not an object)")
    if document.get("format") != FORMAT_NAME:
        raise UserError(f"{path}: not a shortlist file (format is {document.get('format')!r}, "
                        f"expected {FORMAT_NAME!r})")
    version = document.get("format_version")
    if not _is_int(version) or version < 1:
        raise invalid(f"format_version {version!r} is not a positive integer")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: shortlist format_version {version} is newer than this toolkit reads "
                        f"({FORMAT_VERSION}); upgrade seq2seq or rebuild the shortlist")
    src_size, tgt_size = document.get("src_vocab_size"), document.get("tgt_vocab_size")
    if not _is_int(src_size) or src_size < 1:
        raise invalid(f"src_vocab_size {src_size!r} is not a positive integer")
    if not _is_int(tgt_size) or tgt_size <= EOS_ID:
        raise invalid(f"tgt_vocab_size {tgt_size!r} is not an integer above {EOS_ID}")
    for key in ("src_tokenizer", "tgt_tokenizer"):
        if not isinstance(document.get(key), str):
            raise invalid(f"{key} is not a string")
    if not isinstance(document.get("settings"), dict):
        raise invalid("settings is not an object")
    frequent, rows = document.get("frequent"), document.get("candidates")
    if not _is_id_list(frequent):
        raise invalid("frequent is not a list of integers")
    if not isinstance(rows, list) or not all(_is_id_list(row) for row in rows):
        raise invalid("candidates is not a list of lists of integers")
    if len(rows) != src_size:
        raise invalid(f"candidates has {len(rows)} lists for {src_size} source pieces")
    for name, ids in (("frequent", set(frequent)), ("candidates", {i for row in rows for i in row})):
        if ids and (min(ids) < 0 or max(ids) >= tgt_size):
            raise invalid(f"{name} has ids outside [0, {tgt_size})")
        if ids & set(_BANNED):
            raise invalid(f"{name} contains a pad, bos or unk id ({', '.join(map(str, _BANNED))})")
    return ShortlistDocument(frequent=frequent, rows=rows, src_vocab_size=src_size, tgt_vocab_size=tgt_size,
                             src_tokenizer_digest=document["src_tokenizer"],
                             tgt_tokenizer_digest=document["tgt_tokenizer"], settings=document["settings"])


def _is_int(value: Any) -> bool:
    return type(value) is int  # JSON true/false load as bool, a subclass of int: not an id


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)
