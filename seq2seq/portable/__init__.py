"""The exported-model runtime: translation, generation and classification with onnxruntime,
numpy and SentencePiece, importing no torch, Lightning or Hydra.

    >>> from seq2seq.portable import load                      # doctest: +SKIP
    >>> load("exported/de-en").translate(["Ein Hund läuft."])  # doctest: +SKIP

An exported directory is what `seq2seq-export model=DIR output=OUT` writes (seq2seq.exporting).
The PyTorch code may use pieces of this package; this package never imports the PyTorch code.
"""

from __future__ import annotations

import os

from seq2seq.portable.exported import EXPORT_FILE, ExportedDirectory, is_exported

__all__ = ["EXPORT_FILE", "ExportedDirectory", "is_exported", "load"]


def load(path: str | os.PathLike, threads: int | None = None):
    """The Translator, Generator or Classifier of an exported directory, by its task."""
    directory = ExportedDirectory.open(path, threads=threads)
    if directory.task == "translation":
        from seq2seq.portable.translation import Translator

        return Translator(directory)
    if directory.task == "language_model":
        from seq2seq.portable.language_model import Generator

        return Generator(directory)
    from seq2seq.portable.classification import Classifier

    return Classifier(directory)
