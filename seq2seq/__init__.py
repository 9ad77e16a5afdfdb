"""seq2seq: LSTM encoder-decoder translation with SentencePiece, Lightning and Hydra."""

__version__ = "0.1.0"

from seq2seq.translator import Translator  # noqa: E402

__all__ = ["Translator", "__version__"]
