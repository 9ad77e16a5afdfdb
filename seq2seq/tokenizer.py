"""SentencePiece tokenizers: trained from raw text once (cached by content), loaded, used.

Special ids are fixed for every model the toolkit trains, so a model's embedding table and a
tokenizer always agree on them: pad=0, unk=1, bos=2, eos=3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from seq2seq.errors import UserError

log = logging.getLogger(__name__)

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class SentencePieceSettings:
    """What a SentencePiece model is trained with; part of its cache key."""

    vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe | char | word
    character_coverage: float = 1.0
    input_sentence_size: int = 2_000_000
    seed_sentencepiece_size: int = 1_000_000
    # Keep text exactly as written (no Unicode normalization, runs of spaces kept, newline as a
    # piece): what a character language model needs to reproduce its input byte for byte.
    # vocab_size is then an upper bound (the pieces are the characters seen in training).
    preserve_text: bool = False

    def __post_init__(self) -> None:
        if self.model_type not in {"unigram", "bpe", "char", "word"}:
            raise UserError(
                f"tokenizer model_type={self.model_type!r} is not one of unigram, bpe, char, word"
            )
        if not 0.0 < self.character_coverage <= 1.0:
            raise UserError(
                f"tokenizer character_coverage={self.character_coverage} must be in (0, 1]"
            )
        if self.vocab_size < 8:
            raise UserError(f"tokenizer vocab_size={self.vocab_size} is too small (minimum 8)")


@dataclass(frozen=True)
class SubwordSampling:
    """Subword regularization by l-best sampling (Kudo 2018, section 3.2): a training sentence is
    segmented afresh each time it is drawn, one of the unigram model's `nbest_size` best
    segmentations x with probability proportional to P(x)^alpha (alpha near 0: nearly uniform;
    large: nearly always the best one).

    The draw is ours, not SentencePiece's: its sampler's generator cannot be seeded so that two
    processes draw alike, and a resumed run must draw what the interrupted one would have."""

    alpha: float
    nbest_size: int = 16

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None, model_type: str) -> SubwordSampling | None:
        """`tokenizer.sampling` checked: None when sampling is off (alpha null or 0)."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - {"alpha", "nbest_size"})
        if unknown:
            raise UserError(f"tokenizer.sampling has no setting {unknown[0]!r} (known: alpha, nbest_size)")
        alpha, nbest_size = settings.get("alpha"), settings.get("nbest_size", 16)
        if alpha is None or alpha == 0:
            return None
        if model_type != "unigram":
            raise UserError(f"tokenizer.sampling needs a unigram tokenizer (it samples among the unigram "
                            f"model's best segmentations), not model_type={model_type}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise UserError(f"tokenizer.sampling.alpha={alpha!r} must be a number above 0")
        if isinstance(nbest_size, bool) or not isinstance(nbest_size, int) or nbest_size < 2:
            raise UserError(f"tokenizer.sampling.nbest_size={nbest_size!r} must be a count of 2 or more")
        return cls(float(alpha), nbest_size)


def refuse_sampling(settings: Mapping[str, Any] | None, model_type: str) -> None:
    """For the tasks whose training text is one stream (language model) or not pairs (classifier)."""
    if SubwordSampling.from_settings(settings, model_type):
        raise UserError("tokenizer.sampling (subword regularization) is for translation; "
                        "set tokenizer.sampling.alpha=null for this task")


class Tokenizer:
    """A loaded SentencePiece model with the toolkit's fixed special ids."""

    def __init__(self, model_file: str | os.PathLike) -> None:
        self.model_file = Path(model_file)
        self._piece_log_probs: np.ndarray | None = None  # for sampling, built on first use
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
        except (OSError, RuntimeError) as error:
            raise UserError(f"cannot load SentencePiece model {self.model_file}: {error}") from None
        for name, expected, actual in (
            ("pad", PAD_ID, self._sp.pad_id()),
            ("unk", UNK_ID, self._sp.unk_id()),
            ("bos", BOS_ID, self._sp.bos_id()),
            ("eos", EOS_ID, self._sp.eos_id()),
        ):
            if actual != expected:
                raise UserError(
                    f"{self.model_file}: {name} id is {actual}, expected {expected}; "
                    "retrain the tokenizer with this toolkit"
                )

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __len__(self) -> int:
        return self._sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        """Pieces ids without bos/eos; the data pipeline adds those where they belong."""
        return self._sp.encode(list(lines), out_type=int)

    def sample_encode(self, lines: Sequence[str], sampling: SubwordSampling,
                      generator: np.random.Generator) -> list[list[int]]:
        """One sampled segmentation per line (see `SubwordSampling`), drawn with `generator`."""
        if self._piece_log_probs is None:
            self._piece_log_probs = np.array([self._sp.get_score(i) for i in range(len(self))])
        sampled = []
        for line in lines:
            candidates = self._sp.nbest_encode_as_ids(line, nbest_size=sampling.nbest_size)
            if len(candidates) <= 1:
                sampled.append(candidates[0] if candidates else [])
                continue
            log_probs = np.array([self._piece_log_probs[ids].sum() for ids in candidates]) * sampling.alpha
            weights = np.exp(log_probs - log_probs.max())
            sampled.append(candidates[generator.choice(len(candidates), p=weights / weights.sum())])
        return sampled

    def encode_text(self, text: str) -> list[int]:
        """Ids of one text, newlines included (for a `preserve_text` model)."""
        return self._sp.encode(text, out_type=int)

    def encode_pieces(self, line: str) -> list[str]:
        return self._sp.encode(line, out_type=str)

    def id_to_piece(self, ids: Iterable[int]) -> list[str]:
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Exact SentencePiece detokenization; special ids are dropped first."""
        cleaned = [[int(i) for i in seq if i > EOS_ID] for seq in ids]
        return self._sp.decode(cleaned)


_VERBATIM_OPTIONS = dict(
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=False,
    user_defined_symbols=["\n"],
    hard_vocab_limit=False,
    max_sentence_length=1 << 20,  # long lines still count towards the character inventory
)


def _hash_files(paths: Sequence[Path], settings: SentencePieceSettings) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(settings), sort_keys=True).encode())
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def train_or_load(
    text_files: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    settings: SentencePieceSettings,
    name: str = "spm",
) -> Tokenizer:
    """Train a SentencePiece model on `text_files`, or reuse the cached one for the same input.

    The cache key is a hash of the files' bytes and the settings, so editing the corpus or a
    setting retrains, and rerunning an experiment does not.
    """
    paths = [Path(p) for p in text_files]
    for path in paths:
        if not path.is_file():
            raise UserError(f"tokenizer training file not found: {path}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    model_file = cache / f"{name}-{_hash_files(paths, settings)}.model"
    if model_file.is_file():
        log.info("reusing tokenizer %s", model_file)
        return Tokenizer(model_file)

    log.info("training %s SentencePiece tokenizer (%d pieces) on %s",
             settings.model_type, settings.vocab_size, ", ".join(map(str, paths)))
    # Train into a temporary prefix and rename, so a killed run never leaves a half model behind
    # that a later run would take for a cached one.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        prefix = Path(tmp) / "model"
        try:
            spm.SentencePieceTrainer.train(
                input=",".join(str(p) for p in paths),
                model_prefix=str(prefix),
                vocab_size=settings.vocab_size,
                model_type=settings.model_type,
                character_coverage=settings.character_coverage,
                input_sentence_size=settings.input_sentence_size,
                seed_sentencepiece_size=settings.seed_sentencepiece_size,
                shuffle_input_sentence=True,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                num_threads=max(1, os.cpu_count() or 1),
                minloglevel=2,
                **(_VERBATIM_OPTIONS if settings.preserve_text else {}),
            )
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[-1] if str(error).strip() else error
            raise UserError(
                f"SentencePiece training failed on {', '.join(map(str, paths))}: {first_line}"
            ) from None
        os.replace(f"{prefix}.model", model_file)
    return Tokenizer(model_file)


def file_digest(path: str | os.PathLike) -> str:
    """A short hash of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def keep_with_run(files: set[Path], run_dir: Path | None) -> None:
    """Copy tokenizer models into the run folder: the run stays reproducible after the cache is cleared."""
    if run_dir is None:
        return
    target = run_dir / "tokenizers"
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, target / path.name)
