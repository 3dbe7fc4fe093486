"""Llama-2-7B (Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models", 2023).

32 pre-norm decoder layers of width 4096 with 32 heads, RMSNorm, rotary position embedding and
a SwiGLU MLP of width 11008, vocabulary 32,000, untied output projection: 6,738,415,616
parameters, the count of the released checkpoint. Too large to allocate here: the zoo builds it on
the meta device only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.zoo.models.layers import RMSNorm, RotaryAttention

__all__ = ["Llama7B"]


class DecoderLayer(nn.Module):
    """x + attn(norm(x)), then x + w2(silu(w1(norm(x))) * w3(norm(x)))."""

    def __init__(self, dim: int, heads: int, hidden: int, max_seq: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(dim)
        self.attention = RotaryAttention(dim, heads, max_seq)
        self.ffn_norm = RMSNorm(dim)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Llama7B(nn.Module):
    """Llama-2-7B: token ids ``[batch, seq]`` to logits ``[batch, seq, 32000]``.

    :param max_seq: longest sequence the rotary tables cover.
    """

    def __init__(self, max_seq: int = 4096) -> None:
        super().__init__()
        dim = 4096
        self.tok_embeddings = nn.Embedding(32000, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, 32, 11008, max_seq) for _ in range(32))
        self.norm = RMSNorm(dim)
        self.output = nn.Linear(dim, 32000, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))
