"""EduAttention: identity at alpha=0, gradients to alpha, and text-queries-over-tokens attention by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.comkd import EduAttention

B, N, C, D = 2, 3, 4, 4
Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture
def inputs() -> Inputs:
    gen = torch.Generator().manual_seed(0)
    pooled, tokens = torch.randn(B, D, generator=gen), torch.randn(B, N, D, generator=gen)
    return pooled, tokens, torch.randn(C, D, generator=gen)


def test_alpha_starts_at_zero_and_returns_pooled_exactly(inputs: Inputs) -> None:
    pooled, tokens, text = inputs
    edu = EduAttention(D)
    assert edu.alpha.item() == 0.0
    assert torch.equal(edu(pooled, tokens, text), pooled)


def test_gradient_reaches_alpha_at_init(inputs: Inputs) -> None:
    pooled, tokens, text = inputs
    edu = EduAttention(D, num_heads=2)
    edu(pooled, tokens, text).sum().backward()
    assert edu.alpha.grad is not None and edu.alpha.grad.abs().item() > 0


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_single_head_output_matches_hand_attention(inputs: Inputs) -> None:
    pooled, tokens, text = inputs
    torch.manual_seed(1)
    edu = EduAttention(D)
    with torch.no_grad():
        edu.alpha.fill_(0.5)
        out = edu(pooled, tokens, text).numpy()
    w = edu.attn.in_proj_weight.detach().numpy()
    bias = edu.attn.in_proj_bias.detach().numpy()
    w_o, b_o = edu.attn.out_proj.weight.detach().numpy(), edu.attn.out_proj.bias.detach().numpy()
    expected = np.zeros((B, D))
    for b in range(B):
        keys = [w[D : 2 * D] @ tokens[b, n].numpy() + bias[D : 2 * D] for n in range(N)]
        values = [w[2 * D :] @ tokens[b, n].numpy() + bias[2 * D :] for n in range(N)]
        for c in range(C):
            query = w[:D] @ text[c].numpy() + bias[:D]
            weights = softmax(np.array([query @ key / np.sqrt(D) for key in keys]))
            mixed = sum(weights[n] * values[n] for n in range(N))
            expected[b] += (w_o @ mixed + b_o) / C
    assert np.allclose(out, pooled.numpy() + 0.5 * expected, atol=1e-5)


def test_output_ignores_token_order_but_follows_text(inputs: Inputs) -> None:
    pooled, tokens, text = inputs
    edu = EduAttention(D)
    with torch.no_grad():
        edu.alpha.fill_(1.0)
        out = edu(pooled, tokens, text)
        assert torch.allclose(edu(pooled, tokens.flip(1), text), out, atol=1e-6)
        assert not torch.allclose(edu(pooled, tokens, text[:2]), out)


@pytest.mark.parametrize(
    ("pooled_shape", "tokens_shape", "text_shape", "match"),
    [
        ((B, D + 1), (B, N, D), (C, D), r"pooled.*\(2, 5\)"),
        ((B, D), (B + 1, N, D), (C, D), r"tokens.*\(3, 3, 4\)"),
        ((B, D), (B, N, D), (C, D - 1), r"text.*\(4, 3\)"),
        ((B, D), (B, N, D), (0, D), r"text.*\(0, 4\)"),
    ],
)
def test_shape_errors_name_the_shapes(
    pooled_shape: tuple[int, ...], tokens_shape: tuple[int, ...], text_shape: tuple[int, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        EduAttention(D)(torch.zeros(pooled_shape), torch.zeros(tokens_shape), torch.zeros(text_shape))


def test_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="dim=4, num_heads=3"):
        EduAttention(4, num_heads=3)
