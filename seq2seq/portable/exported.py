"""An exported directory (export.json, ONNX graphs, tokenizers) opened for onnxruntime."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seq2seq.errors import UserError

EXPORT_FILE = "export.json"
FORMAT_NAME = "seq2seq-onnx"
FORMAT_VERSION = 1
TASKS = ("translation", "language_model", "classification")


def is_exported(path: str | os.PathLike) -> bool:
    """Whether `path` is an exported directory (rather than a PyTorch model directory)."""
    return (Path(path) / EXPORT_FILE).is_file()


@dataclass
class ExportedDirectory:
    path: Path
    document: dict[str, Any]
    threads: int | None = None
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike, threads: int | None = None) -> ExportedDirectory:
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"exported model directory not found: {path}")
        file = path / EXPORT_FILE
        try:
            document = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: no {EXPORT_FILE}; export a model directory with seq2seq-export") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{file}: not valid JSON ({error})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
            raise UserError(f"{file}: not a {FORMAT_NAME} export")
        version = document.get("format_version")
        if type(version) is not int or version > FORMAT_VERSION:
            raise UserError(f"{file}: format version {version!r} is newer than this runtime reads "
                            f"({FORMAT_VERSION}); upgrade seq2seq")
        if document.get("task") not in TASKS:
            raise UserError(f"{file}: unknown task {document.get('task')!r} (known: {', '.join(TASKS)})")
        for key in ("graphs", "tokenizers", "network", "config"):
            if not isinstance(document.get(key), dict):
                raise UserError(f"{file}: '{key}' is missing or not an object")
        for kind in ("graphs", "tokenizers"):
            for role, name in document[kind].items():
                if not isinstance(name, str) or Path(name).name != name:
                    raise UserError(f"{file}: {kind} entry {role!r} must be a file name in the directory")
                if not (path / name).is_file():
                    raise UserError(f"{path}: {name} is missing")
        if threads is not None and threads < 0:
            raise UserError(f"threads={threads} must be 0 (onnxruntime's choice) or more")
        return cls(path, document, threads)

    @property
    def task(self) -> str:
        return self.document["task"]

    @property
    def network(self) -> dict[str, Any]:
        return self.document["network"]

    @property
    def config(self) -> dict[str, Any]:
        """What the export kept of model.json: languages, decoding defaults, labels, ..."""
        return self.document["config"]

    @property
    def precision(self) -> str:
        return str(self.document.get("precision", "fp32"))

    def tokenizer(self, role: str):
        from seq2seq.tokenizer import Tokenizer

        name = self.document["tokenizers"].get(role)
        if name is None:
            raise UserError(f"{self.path}: export.json names no {role!r} tokenizer")
        return Tokenizer(self.path / name)

    def session(self, graph: str):
        """An onnxruntime session for one of the graphs, made once."""
        if graph not in self._sessions:
            import onnxruntime

            name = self.document["graphs"].get(graph)
            if name is None:
                raise UserError(f"{self.path}: export.json has no {graph!r} graph (task {self.task})")
            options = onnxruntime.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
            try:
                self._sessions[graph] = onnxruntime.InferenceSession(
                    str(self.path / name), options, providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime raises its own exception types for bad files
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise UserError(f"{self.path / name}: not a loadable ONNX graph ({first})") from None
        return self._sessions[graph]
