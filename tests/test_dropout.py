"""The CPU dropout: F.dropout's statistics and gradients, reproducible from the seed."""

import pytest
import torch

from seq2seq.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_drops_the_requested_fraction_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p) < 0.005  # 400k draws: the standard error is below 0.001
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, float(kept[0])))
    # The keep probability is rounded to 1/65536 and the scale matches the rounded value.
    assert float(kept[0]) == pytest.approx(1 / (1 - p), rel=1e-4)
    assert abs(float(y.mean()) - 1.0) < 0.02


def test_masks_are_independent_across_positions_and_calls():
    torch.manual_seed(0)
    a = dropout(torch.ones(64, 1000), 0.5) != 0
    b = dropout(torch.ones(64, 1000), 0.5) != 0
    assert not torch.equal(a, b)
    # The 16-bit lanes of one 64-bit draw are not correlated: neighbours agree half the time.
    agree = float((a[:, 1:] == a[:, :-1]).float().mean())
    assert abs(agree - 0.5) < 0.01


def test_gradient_flows_through_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(8, 33, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], float(y[kept][0] / x[kept][0])))
    assert torch.all(x.grad[~kept] == 0)


def test_same_seed_same_mask_and_eval_is_identity():
    layer = Dropout(0.4)
    x = torch.randn(5, 7, 9)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(first, layer(x))
    layer.eval()
    assert layer(x) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert dropout(x, 0.0) is x


def test_bf16_stays_bf16():
    x = torch.randn(10, 10).bfloat16()
    assert dropout(x, 0.2).dtype == torch.bfloat16


def test_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="not in"):
        Dropout(1.5)
