"""ComKD-CLIP's EduAttention: teacher text features attend over student spatial tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EduAttention(nn.Module):
    """ComKD-CLIP EduAttention: queries from teacher text features, keys/values from student tokens."""

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim must be a positive multiple of num_heads, got {dim=}, {num_heads=}")
        self.dim = dim
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, pooled: Tensor, tokens: Tensor, text: Tensor) -> Tensor:
        """Return f_e = pooled + alpha * mean_c Attn(Q=text_c, K=V=tokens), shape (B, D), not normalised."""
        if pooled.ndim != 2 or pooled.shape[1] != self.dim:
            raise ValueError(f"pooled must be (B, {self.dim}), got {tuple(pooled.shape)}")
        b = pooled.shape[0]
        if tokens.ndim != 3 or tokens.shape[0] != b or tokens.shape[2] != self.dim or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be ({b}, N>0, {self.dim}), got {tuple(tokens.shape)}")
        if text.ndim != 2 or text.shape[1] != self.dim or text.shape[0] == 0:
            raise ValueError(f"text must be (C>0, {self.dim}), got {tuple(text.shape)}")
        queries = text.to(tokens.dtype).unsqueeze(0).expand(b, -1, -1)
        out, _ = self.attn(queries, tokens, tokens, need_weights=False)
        return pooled + self.alpha * out.mean(dim=1)
