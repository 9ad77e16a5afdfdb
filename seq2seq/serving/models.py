"""The models a server holds: each model directory loaded once, named, and described for /models."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import seq2seq
from seq2seq.errors import UserError
from seq2seq.tasks import BY_MODEL_TYPE

# task -> the name of the top-level seq2seq class that loads its model directories.
LOADERS = {"translation": "Translator", "language_model": "Generator", "classification": "Classifier",
           "forecast": "Forecaster"}


@dataclass
class ServedModel:
    """A loaded model (Translator, Generator, Classifier or Forecaster, or a stand-in with the same
    methods) and what /models says about it."""

    name: str
    task: str
    model: Any
    path: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "path": self.path, **self.info}


def task_of(directory: Path) -> str:
    """The task of a model directory (from model.json) or exported directory (export.json), with
    the commands' one-line errors."""
    from seq2seq.portable import ExportedDirectory, is_exported

    if is_exported(directory):
        return ExportedDirectory.open(directory).task
    from seq2seq.bundle import read_bundle_config  # torch: not needed for an exported directory

    model_type = read_bundle_config(directory).get("model_type")
    if model_type not in BY_MODEL_TYPE or BY_MODEL_TYPE[model_type].name not in LOADERS:
        raise UserError(f"{directory}: model type {model_type!r} cannot be served "
                        f"(known: {', '.join(BY_MODEL_TYPE)})")
    return BY_MODEL_TYPE[model_type].name


def default_name(directory: Path) -> str:
    """A run's model folder is called 'model': name it after the run folder instead."""
    directory = Path(os.path.abspath(directory))  # not resolve(): a symlink's own name is the one given
    return directory.parent.name if directory.name == "model" and directory.parent.name else directory.name


def unique_name(served: Mapping[str, Any], base: str) -> str:
    unique, count = base, 1
    while unique in served:
        count += 1
        unique = f"{base}-{count}"
    return unique


def describe_loaded(task: str, model: Any, precision: str) -> dict[str, Any]:
    """Languages, parameter count, precision and device of a loaded model (what it has of them)."""
    info: dict[str, Any] = {"precision": precision}
    bundle = getattr(model, "bundle", None) or getattr(model, "directory", None)  # exported: its export.json
    config = getattr(bundle, "config", {}) or {}
    network = getattr(model, "model", None)
    if network is not None and hasattr(network, "parameters"):
        info["parameters"] = sum(p.numel() for p in network.parameters())
    if getattr(model, "device", None) is not None:
        info["device"] = str(model.device)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if task == "translation":
        info["languages"] = {"source": data.get("src_lang"), "target": data.get("tgt_lang")}
    if task == "classification":
        info["labels"] = list(getattr(model, "labels", []))
    if task == "forecast" and isinstance(config.get("model_config"), dict):
        info["horizon"] = config["model_config"].get("horizon")
        info["window"] = config["model_config"].get("window")
    return info


def parse_model_argument(value: Any) -> list[tuple[str | None, str]]:
    """model=DIR, model=[DIR1,DIR2] or model={name: DIR, ...} -> [(name or None, DIR)]."""
    if value is None or value == "" or value == []:
        raise UserError("model= is required: a model directory, a list model=[DIR1,DIR2] or a mapping "
                        "model={name:DIR}")
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, Mapping):
        return [(str(name), str(path)) for name, path in value.items()]
    if isinstance(value, Sequence):
        return [(None, str(path)) for path in value]
    raise UserError(f"model={value!r}: expected a directory, a list of directories or a name: directory mapping")


def load_models(entries: Sequence[tuple[str | None, str]], device: str | None = None,
                precision: str = "auto", threads: int | None = None) -> dict[str, ServedModel]:
    """Load every model directory (or exported directory: onnxruntime with `threads`); names are
    unique (a repeated name gets -2, -3, ...)."""
    from seq2seq.portable import is_exported, load

    served: dict[str, ServedModel] = {}
    for name, path in entries:
        directory = Path(path)
        task = task_of(directory)
        unique = unique_name(served, name or default_name(directory))
        if is_exported(directory):
            model = load(directory, threads=threads or None)
            served[unique] = ServedModel(unique, task, model, str(directory),
                                         describe_loaded(task, model, model.precision) | {"runtime": "onnxruntime"})
            continue
        loader = getattr(seq2seq, LOADERS[task], None)
        if loader is None:
            raise UserError(f"{directory}: {task} models cannot be served by this version "
                            f"(seq2seq.{LOADERS[task]} is missing)")
        if task == "forecast":
            model = loader.load(directory, device=device)
        else:  # int8 exists for translators only: the other models take the machine's best float
            model = loader.load(directory, device=device,
                                precision="auto" if precision == "int8" and task != "translation" else precision)
        served[unique] = ServedModel(unique, task, model, str(directory),
                                     describe_loaded(task, model, getattr(model, "precision", "fp32")))
    return served
