"""A stacked-LSTM language model over characters (or any SentencePiece vocabulary).

Text is one long stream of ids. Training reads it as B parallel streams in windows of T steps
and carries the LSTM state from one window to the next (truncated back-propagation through
time); scoring and generation use the same `forward` with an explicit state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.dropout import Dropout
from seq2seq.errors import UserError
from seq2seq.explicit_lstm import make_lstm
from seq2seq.rnn import LSTMState, lstm_step
from seq2seq.sampling import check_sampling, sample_tokens
from seq2seq.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID


class LanguageModel(nn.Module):
    """Embedding -> stacked LSTM -> linear layer over the vocabulary.

    Constructor arguments are plain values, so a model directory rebuilds it from JSON.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.2,
        tie_embeddings: bool = False,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        if vocab_size < 5:
            raise UserError(f"vocab_size={vocab_size} is too small for a language model")
        if num_layers < 1 or hidden_size < 1 or embed_dim < 1:
            raise UserError("model.num_layers, model.hidden_size and model.embed_dim must be positive")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout={dropout} must be in [0, 1)")
        if tie_embeddings and embed_dim != hidden_size:
            raise UserError(f"model.tie_embeddings=true needs embed_dim ({embed_dim}) == hidden_size "
                            f"({hidden_size}): the output layer reuses the embedding table")
        self.config = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size,
                           num_layers=num_layers, dropout=dropout, tie_embeddings=tie_embeddings, cell=cell)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(dropout)
        self.lstm = make_lstm(cell, embed_dim, hidden_size, num_layers, dropout=dropout)
        self.output = nn.Linear(hidden_size, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embedding.weight

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> LSTMState:
        zeros = torch.zeros(self.num_layers, batch, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def forward(self, tokens: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """(B, T) ids -> (B, T, V) logits and the state after the last step."""
        embedded = self.dropout(self.embedding(tokens))
        if not self.training and tokens.size(1) == 1 and state is not None:  # generation, token by token
            hidden, state = lstm_step(self.lstm, embedded.squeeze(1), state)
            return self.output(hidden).unsqueeze(1), state
        hidden, state = self.lstm(embedded, state)
        return self.output(self.dropout(hidden)), state


def detach_state(state: LSTMState) -> LSTMState:
    return state[0].detach(), state[1].detach()


# --------------------------------------------------------------------------- streams
def stream_batches(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """Cut a 1-D id tensor into `streams` contiguous rows of equal length (the tail is dropped)."""
    length = ids.numel() // streams
    if length < 2:
        raise UserError(f"text of {ids.numel()} tokens is too short for {streams} streams; "
                        f"lower data.batch_streams or add text")
    return ids[: length * streams].view(streams, length)


@dataclass
class ScoringStreams:
    """A held-out text laid out for batched scoring of every token but the first.

    Row s scores `targets[s]` from `inputs[s]`; rows after the first start where the previous
    row ends and are first run over the `warmup` tokens before them (unscored), so that every
    scored token has context, as if the text were read in one pass.
    """

    inputs: torch.Tensor  # (S, n), padded with PAD_ID
    targets: torch.Tensor  # (S, n), PAD_ID where nothing is scored
    warmup: torch.Tensor  # (S, W), context read before each row; row 0 has none
    has_warmup: torch.Tensor  # (S,) bool

    @property
    def scored_tokens(self) -> int:
        return int((self.targets != PAD_ID).sum())

    def rows(self, index: slice | list[int]) -> ScoringStreams:
        return ScoringStreams(self.inputs[index], self.targets[index], self.warmup[index], self.has_warmup[index])


def scoring_streams(ids: torch.Tensor, streams: int = 16, warmup: int = 256) -> ScoringStreams:
    ids = ids.long()
    predicted = ids.numel() - 1
    if predicted < 1:
        raise UserError("the text to score needs at least two characters")
    streams = max(1, min(streams, predicted))
    length = math.ceil(predicted / streams)
    inputs = torch.full((streams, length), PAD_ID, dtype=torch.long)
    targets = torch.full((streams, length), PAD_ID, dtype=torch.long)
    context = torch.full((streams, warmup), PAD_ID, dtype=torch.long)
    has_warmup = torch.zeros(streams, dtype=torch.bool)
    for s in range(streams):
        start = s * length
        end = min(start + length, predicted)
        if end <= start:
            continue
        inputs[s, : end - start] = ids[start:end]
        targets[s, : end - start] = ids[start + 1: end + 1]
        if s > 0 and warmup > 0:
            before = ids[max(0, start - warmup): start]
            context[s, warmup - before.numel():] = before
            has_warmup[s] = True
    return ScoringStreams(inputs, targets, context, has_warmup)


@torch.no_grad()
def score_streams(model: LanguageModel, data: ScoringStreams, chunk: int = 512) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the scored tokens, and their number."""
    device = next(model.parameters()).device
    rows = data.inputs.size(0)
    state = model.initial_state(rows, device)
    if data.warmup.size(1) > 0 and bool(data.has_warmup.any()):
        # Left padding only touches rows whose context is shorter than W, i.e. the text's first
        # row (reset below) and the row right after it, which sees a few pad steps at the start.
        _, warmed = model(data.warmup.to(device), state)
        keep = data.has_warmup.to(device).view(1, -1, 1)
        state = (torch.where(keep, warmed[0], state[0]), torch.where(keep, warmed[1], state[1]))
    total, count = 0.0, 0
    for start in range(0, data.inputs.size(1), chunk):
        inputs = data.inputs[:, start:start + chunk].to(device)
        targets = data.targets[:, start:start + chunk].to(device)
        logits, state = model(inputs, state)
        real = targets != PAD_ID
        if bool(real.any()):
            total += float(F.cross_entropy(logits[real].float(), targets[real], reduction="sum"))
            count += int(real.sum())
    return total, count


def loss_report(nats_sum: float, count: int) -> dict[str, float]:
    nats = nats_sum / max(count, 1)
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "perplexity": math.exp(min(nats, 50.0)),
            "chars": count}


# ------------------------------------------------------------------------ generation
# The special ids are the first four (pad 0, unk 1, bos 2, eos 3): one slice masks them all.
FIRST_TEXT_ID = max(PAD_ID, UNK_ID, BOS_ID, EOS_ID) + 1


@torch.no_grad()
def generate_ids(
    model: LanguageModel,
    prompt_ids: list[int],
    max_new: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield, step by step, the (num_samples,) ids that continue `prompt_ids`.

    The prompt is read in one fused LSTM call to build the state; special ids are never drawn.
    """
    if not greedy:
        check_sampling(temperature, top_k, top_p)
    if not prompt_ids:
        raise UserError("generation needs a non-empty prompt (the Generator primes empty prompts with a newline)")
    device = next(model.parameters()).device
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device).expand(num_samples, -1)
    logits, state = model(prompt)
    logits = logits[:, -1]
    for _ in range(max_new):
        log_probs = logits.float().log_softmax(-1)
        log_probs[:, :FIRST_TEXT_ID] = float("-inf")
        if greedy:
            token = log_probs.argmax(-1)
        else:
            token = sample_tokens(log_probs, temperature, top_k, top_p, generator)
        yield token
        logits, state = model(token.unsqueeze(1), state)
        logits = logits[:, -1]
