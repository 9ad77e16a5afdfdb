"""Drawing the next token from a distribution: temperature, top-k and top-p (nucleus) sampling,
shared by translation and the language model."""

from __future__ import annotations

import torch

from seq2seq.portable.sampling import check_sampling  # noqa: F401  (shared with the runtime)


def sample_tokens(log_probs: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """(R, V) log-probabilities -> (R,) sampled token ids."""
    logits = log_probs / temperature
    if top_k > 0 and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
