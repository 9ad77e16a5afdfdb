"""seq2seq: LSTM translation and character language models with SentencePiece, Lightning and Hydra."""

__version__ = "0.1.0"

from seq2seq.classifier import Classifier  # noqa: E402
from seq2seq.generator import Generator  # noqa: E402
from seq2seq.translator import Translator  # noqa: E402

__all__ = ["Classifier", "Generator", "Translator", "__version__"]
