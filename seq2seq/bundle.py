"""Self-contained model directories: weights, JSON config and tokenizer models.

Layout of `<dir>`:
  model.json     format name and version, model type and constructor arguments, tokenizer files,
                 decoding defaults, where the training data came from
  weights.pt     the state dict, read with torch.load(weights_only=True): tensors only, so a
                 planted pickle cannot run code
  *.spm.model    SentencePiece models
  shortlist.json a translation model's vocabulary shortlist (seq2seq.tasks.translation.shortlist)

The model class is looked up by its type name in the toolkit's own table of tasks
(`seq2seq.tasks.TASKS`), never imported from a string in the file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seq2seq.errors import UserError
from seq2seq.tasks import BY_MODEL_TYPE
from seq2seq.tokenizer import Tokenizer

FORMAT_NAME = "seq2seq-model"
FORMAT_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"


@dataclass
class Bundle:
    model: torch.nn.Module
    tokenizers: dict[str, Tokenizer]
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def save_bundle(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    model_type: str,
    tokenizer_files: dict[str, str | os.PathLike],
    extra: dict[str, Any] | None = None,
    files: dict[str, str | os.PathLike] | None = None,
) -> Path:
    """Write a model directory atomically: it appears complete or not at all.

    `files`: further files copied in, by their name in the directory (a vocabulary shortlist)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tokenizers = {}
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=f".{directory.name}.") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        copied: dict[str, str] = {}
        for role, source in tokenizer_files.items():
            source = Path(source)
            name = copied.get(str(source.resolve()))
            if name is None:
                name = f"{role}.spm.model"
                shutil.copyfile(source, staging / name)
                copied[str(source.resolve())] = name
            tokenizers[role] = name
        config = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "model_config": dict(model.config),
            "tokenizers": tokenizers,
            **(extra or {}),
        }
        for name, source in (files or {}).items():
            if Path(name).name != name or name in (CONFIG_FILE, WEIGHTS_FILE):
                raise ValueError(f"{name!r} cannot be a file of a model directory")
            shutil.copyfile(source, staging / name)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if directory.exists():
            old = Path(tmp) / "old"
            os.replace(directory, old)
        os.replace(staging, directory)
    return directory


def read_bundle_config(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"model directory not found: {directory}")
    if not directory.is_dir():
        raise UserError(f"{directory} is not a model directory (expected a folder holding {CONFIG_FILE})")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"{directory}: no {CONFIG_FILE}; point model= at the 'model' folder of a run")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{config_path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise UserError(f"{config_path}: not a {FORMAT_NAME} config")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{config_path}: format version {version!r} is newer than this toolkit reads "
            f"({FORMAT_VERSION}); upgrade seq2seq"
        )
    return config


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a weights or Lightning checkpoint file, refusing anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise UserError(f"{path}: refused to load: the file holds more than plain tensors ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: corrupt or truncated weights file ({first})") from None


def load_bundle(directory: str | os.PathLike, device: str | torch.device = "cpu",
                expected_type: str | None = None) -> Bundle:
    """Rebuild the model and tokenizers of a model directory, in eval mode on `device`."""
    directory = Path(directory)
    config = read_bundle_config(directory)
    model_type = config.get("model_type")
    if model_type not in BY_MODEL_TYPE:
        raise UserError(f"{directory}: unknown model type {model_type!r} (known: {', '.join(BY_MODEL_TYPE)})")
    if expected_type is not None and model_type != expected_type:
        raise UserError(f"{directory} holds a {model_type} model; this command needs a {expected_type} model")
    tokenizers = {}
    for role, name in dict(config.get("tokenizers", {})).items():
        if not isinstance(name, str) or Path(name).name != name:
            raise UserError(f"{directory}: tokenizer entry {role!r} must be a file name in the directory")
        if not (directory / name).is_file():
            raise UserError(f"{directory}: tokenizer file {name} is missing")
        tokenizers[role] = Tokenizer(directory / name)
    try:
        model = BY_MODEL_TYPE[model_type].model()(**config["model_config"])
    except (TypeError, KeyError) as error:
        raise UserError(f"{directory}: model config does not fit this toolkit version ({error})") from None
    state = load_state_dict(directory / WEIGHTS_FILE)
    if not isinstance(state, dict):
        raise UserError(f"{directory / WEIGHTS_FILE}: expected a state dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{directory / WEIGHTS_FILE}: weights do not match the model config ({first})") from None
    model.to(device).eval()
    return Bundle(model, tokenizers, config, directory)
