"""Dropout whose mask is cheap to draw on CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element, which makes dropout a noticeable
part of a CPU training step. Here each element gets 16 random bits cut from 64-bit draws, a
quarter of the generator calls, and is kept when those bits fall below a threshold: several
times cheaper (README, "Benchmarks"), forward and backward, with the keep probability
rounded to a multiple of 1/65536 and the scale matched to that rounded probability, so the
expected output still equals the input. GPUs keep PyTorch's fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p), as F.dropout."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or x.numel() == 0:
        return F.dropout(x, p, training)
    kept_levels = round((1.0 - p) * _LEVELS)
    if kept_levels == 0:
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    # Signed 16-bit lanes are uniform on [-32768, 32767]; kept_levels of them lie below the threshold.
    keep = bits.view(torch.int16)[:n].view(x.shape) < kept_levels - _LEVELS // 2
    return x * keep * (_LEVELS / kept_levels)


class Dropout(nn.Module):
    """Drop-in for nn.Dropout built on `dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability {p} is not in [0, 1]")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
