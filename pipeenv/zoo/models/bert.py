"""BERT-large (Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", NAACL 2019), uncased, with a two-way sequence-classification head.

24 post-LN encoder layers, width 1024, 16 heads, FFN 4096, vocabulary 30,522, 512 positions, two
segments (all tokens use segment 0). Encoder and pooler hold 335,141,888 parameters (the
published "340M", HuggingFace's exact count for ``bert-large-uncased``); the classifier adds
2,050, for 335,143,938 in all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.zoo.models.layers import SelfAttention, TokenPosEmbedding

__all__ = ["BertLarge"]


class EncoderLayer(nn.Module):
    """Post-LN encoder layer: ln(x + attn(x)), then ln(x + ffn(x))."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, causal=False)
        self.ln_1 = nn.LayerNorm(dim, eps=1e-12)
        self.fc = nn.Linear(dim, ffn)
        self.proj = nn.Linear(ffn, dim)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.proj(F.gelu(self.fc(x))))


class BertLarge(nn.Module):
    """BERT-large encoder, pooler and classifier: token ids ``[batch, seq]`` to logits.

    :param num_labels: classifier outputs.
    """

    def __init__(self, num_labels: int = 2) -> None:
        super().__init__()
        dim = 1024
        self.embed = TokenPosEmbedding(30522, 512, dim, segments=2)
        self.embed_ln = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(dim, 16, 4096) for _ in range(24))
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_ln(self.embed(ids))
        for layer in self.layers:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))
