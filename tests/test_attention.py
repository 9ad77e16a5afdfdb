import pytest
import torch

from seq2seq.attention import AdditiveAttention, DotAttention, GeneralAttention, make_attention
from seq2seq.errors import UserError


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general", "luong_concat"])
def test_attention_shapes_and_mask(kind):
    torch.manual_seed(0)
    B, T, S, H = 3, 4, 5, 8
    attention = make_attention(kind, query_size=H, key_size=H)
    memory = torch.randn(B, S, H)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    context, weights = attention(torch.randn(B, T, H), attention.precompute_keys(memory), memory, mask)
    assert context.shape == (B, T, H)
    assert weights.shape == (B, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, T))
    assert torch.all(weights[~mask.unsqueeze(1).expand(B, T, S)] == 0)
    # The context is the weighted mean of real positions only.
    torch.testing.assert_close(context[2], memory[2, 0].expand(T, H))


def test_attention_types_are_distinct_modules():
    assert make_attention("none", 4, 4) is None
    assert isinstance(make_attention("luong_dot", 4, 4), DotAttention)
    assert isinstance(make_attention("luong_general", 4, 6), GeneralAttention)
    assert isinstance(make_attention("bahdanau", 4, 6), AdditiveAttention)
    assert isinstance(make_attention("luong_concat", 4, 6), AdditiveAttention)


def test_dot_attention_needs_equal_sizes():
    with pytest.raises(UserError, match="luong_dot"):
        make_attention("luong_dot", 4, 6)


def test_unknown_attention_is_a_user_error():
    with pytest.raises(UserError, match="not one of"):
        make_attention("cosine", 4, 4)
