"""Translate with an exported directory: the runtime's `Translator` (the PyTorch one's interface)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from seq2seq.errors import UserError
from seq2seq.portable.batches import length_sorted_batches, padded
from seq2seq.portable.exported import ExportedDirectory
from seq2seq.portable.search import Hypothesis, decode_options
from seq2seq.tasks.translation.options import DecodingOptions, model_defaults
from seq2seq.tasks.translation.results import InInputOrder, ScoredTranslation, scored_translations
from seq2seq.tokenizer import EOS_ID, PAD_ID


@dataclass
class EncoderMemory:
    memory: np.ndarray | None  # (B, S, K); None without attention
    keys: np.ndarray | None  # (B, S, A)
    mask: np.ndarray | None  # (B, S) True at real positions

    def take(self, index: np.ndarray) -> EncoderMemory:
        return EncoderMemory(*(None if a is None else a[index] for a in (self.memory, self.keys, self.mask)))


@dataclass
class DecoderState:
    h: np.ndarray  # (L, B, H)
    c: np.ndarray
    feed: np.ndarray | None  # (B, O) with input feeding

    def take(self, index: np.ndarray) -> DecoderState:
        return DecoderState(self.h[:, index], self.c[:, index], None if self.feed is None else self.feed[index])


class ExportedSeq2Seq:
    """The encoder and decoder-step graphs behind the interface of the searches, over the target
    pieces `vocab` (a shortlist; all pieces when None)."""

    def __init__(self, directory: ExportedDirectory) -> None:
        self.encoder = directory.session("encoder")
        self.step = directory.session("decoder_step")
        self.output_layer = directory.session("output_layer")
        network = directory.network
        self.tgt_vocab_size = int(network["tgt_vocab_size"])
        self.output_size = int(network["output_size"])
        self.input_feeding = bool(network["input_feeding"])
        self.attention = network["attention"] != "none"
        self.keys = bool(network["attention_keys"])
        self._encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        self._full_layer = self.restricted_layer(None)
        self.vocab: np.ndarray | None = None
        self.layer = self._full_layer
        # Called before every decoder step; seq2seq-serve puts its check for abandoned calls here.
        self.before_step: Callable[[], None] | None = None

    def restricted_layer(self, vocab: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ids = np.arange(self.tgt_vocab_size, dtype=np.int64) if vocab is None else vocab
        weight, bias = self.output_layer.run(None, {"vocab": ids})
        return np.ascontiguousarray(weight), bias

    def restrict(self, vocab: np.ndarray | None) -> None:
        """Decode the next batch over `vocab` (sorted, special pieces first) or all pieces."""
        self.vocab = vocab
        self.layer = self._full_layer if vocab is None else self.restricted_layer(vocab)

    def vocabulary_size(self) -> int:
        """The pieces the search chooses among (the shortlist's, when restricted)."""
        return self.tgt_vocab_size if self.vocab is None else len(self.vocab)

    def encode(self, src: np.ndarray, src_lengths: np.ndarray) -> tuple[EncoderMemory, DecoderState]:
        outputs = dict(zip(self._encoder_outputs, self.encoder.run(None, {"src": src, "src_lengths": src_lengths})))
        mask = src != PAD_ID
        mask[:, 0] = True  # as the PyTorch encoder: an empty source still has one position to attend
        batch = src.shape[0]
        feed = np.zeros((batch, self.output_size), dtype=np.float32) if self.input_feeding else None
        memory = EncoderMemory(outputs["memory"] if self.attention else None, outputs.get("keys"),
                               mask if self.attention else None)
        return memory, DecoderState(outputs["h"], outputs["c"], feed)

    def _run(self, first_outputs: list[str], prev: np.ndarray, state: DecoderState, memory: EncoderMemory,
             width: int) -> tuple[list[np.ndarray], DecoderState, np.ndarray | None]:
        if self.before_step is not None:
            self.before_step()
        tokens = prev if self.vocab is None else self.vocab[prev]
        feeds = {"tokens": tokens, "h": state.h, "c": state.c, "k": np.array([width], dtype=np.int64),
                 "output_weight": self.layer[0], "output_bias": self.layer[1]}
        names = [*first_outputs, "h_out", "c_out"]
        if self.input_feeding:
            feeds["feed"] = state.feed
            names.append("feed_out")
        if self.attention:
            feeds["memory"], feeds["mask"] = memory.memory, memory.mask
            if self.keys:
                feeds["keys"] = memory.keys
            names.append("attention")
        outputs = self.step.run(names, feeds)  # onnxruntime computes only what the names need
        first, rest = outputs[:len(first_outputs)], outputs[len(first_outputs):]
        feed = rest[2] if self.input_feeding else None
        weights = rest[-1] if self.attention else None
        return first, DecoderState(rest[0], rest[1], feed), weights

    def step_logits(self, prev: np.ndarray, state: DecoderState, memory: EncoderMemory
                    ) -> tuple[np.ndarray, DecoderState, np.ndarray | None]:
        """(N,) previous pieces -> (N, V') raw scores, new state, (N, S) attention."""
        (logits,), state, weights = self._run(["logits"], prev, state, memory, 1)
        return logits, state, weights

    def step_top(self, prev: np.ndarray, state: DecoderState, memory: EncoderMemory, width: int):
        """Only the `width` best allowed pieces per row leave the graph: (N, W) raw scores and
        ids, the (N, 1) normalizer, the new state and the attention."""
        (log_norm, scores, tokens), state, weights = self._run(["log_norm", "top_scores", "top_tokens"], prev,
                                                               state, memory, width)
        return scores, tokens, log_norm, state, weights


class Translator(InInputOrder):
    """An exported translation model and its tokenizers.

    >>> t = Translator.load("exported/de-en")               # doctest: +SKIP
    >>> t.translate(["Ein Hund läuft im Park."], beam=5)     # doctest: +SKIP
    """

    def __init__(self, directory: ExportedDirectory) -> None:
        if directory.task != "translation":
            raise UserError(f"{directory.path} holds an exported {directory.task} model, not a translation model")
        self.directory = directory
        self.path = directory.path
        self.model = ExportedSeq2Seq(directory)
        self.src_tokenizer = directory.tokenizer("src")
        self.tgt_tokenizer = directory.tokenizer("tgt")
        self.precision = directory.precision
        self.device = "cpu (onnxruntime)"
        self.default_options = model_defaults(directory.config, f"{directory.path}/export.json")
        self._shortlist = None

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None) -> Translator:
        return cls(ExportedDirectory.open(path, threads=threads))

    def options(self, options: DecodingOptions | None = None, **changes) -> DecodingOptions:
        chosen = (options or self.default_options).updated(changes)
        self.shortlist_for(chosen)
        return chosen

    def shortlist_for(self, options: DecodingOptions):
        """The shortlist (candidates per source piece) when `options.shortlist` says to use it."""
        if options.shortlist == "false":
            return None
        name = self.directory.document.get("shortlist")
        if name is None:
            if options.shortlist == "true":
                raise UserError(f"shortlist=true but {self.path} has no shortlist (export a model directory "
                                "that has one: seq2seq-shortlist model=DIR)")
            return None
        if self._shortlist is None:
            from seq2seq.tasks.translation.shortlist_file import read_shortlist

            document = read_shortlist(self.path / name, self.src_tokenizer, self.tgt_tokenizer)
            self._shortlist = (np.array(sorted(set(document.frequent) | {0, 1, 2, 3}), dtype=np.int64),
                               [np.array(row, dtype=np.int64) for row in document.rows])
        return self._shortlist

    @staticmethod
    def batch_vocabulary(shortlist, src: np.ndarray) -> np.ndarray | None:
        """The union of the candidates of the batch's source pieces, the frequent pieces and the
        special ones (sorted, so pad/unk/bos/eos keep ids 0..3)."""
        if shortlist is None:
            return None
        always, rows = shortlist
        present = np.unique(src[src != PAD_ID])
        return np.union1d(always, np.concatenate([rows[i] for i in present] + [np.array([EOS_ID])]))

    def translate_batches(self, lines: Sequence[str], options: DecodingOptions | None = None,
                          return_attention: bool = False, **changes
                          ) -> Iterator[tuple[list[int], list[list[ScoredTranslation]]]]:
        """Yields (positions, n-best lists) batch by batch, longest sources first."""
        options = self.options(options, **changes)
        shortlist = self.shortlist_for(options)
        rng = np.random.default_rng(options.seed) if options.sampling else None
        ids = self.src_tokenizer.encode(lines)
        for positions in length_sorted_batches([len(s) for s in ids], options.batch_tokens):
            src = padded([ids[i] for i in positions])
            lengths = np.array([max(len(ids[i]), 1) for i in positions], dtype=np.int64)
            vocab = self.batch_vocabulary(shortlist, src)
            self.model.restrict(vocab)
            results: list[list[Hypothesis]] = decode_options(self.model, src, lengths, options, rng, return_attention)
            if vocab is not None:
                for hyps in results:
                    for hyp in hyps:
                        hyp.tokens = vocab[hyp.tokens].tolist()
            texts = self.tgt_tokenizer.decode([h.tokens for hyps in results for h in hyps])
            yield positions, scored_translations(positions, results, ids, texts)
