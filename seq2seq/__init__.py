"""seq2seq: LSTM translation, character language models, sentence classification and weekly
forecasting with SentencePiece, Lightning and Hydra.

The Python API: `Translator`, `Generator`, `Classifier` and `Forecaster`, each with
`.load(model_dir)`. They are imported on first use, so `import seq2seq` stays cheap.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "Translator": "seq2seq.tasks.translation.api",
    "Generator": "seq2seq.tasks.language_model.api",
    "Classifier": "seq2seq.tasks.classification.api",
    "Forecaster": "seq2seq.tasks.forecasting.api",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
