"""ViT-B/16 (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

224x224 RGB input cut into 196 patches of 16x16, a class token, 12 pre-LN encoder layers of
width 768 with 12 heads and a 3072-wide MLP, 1000 classes: 86,567,656 parameters, torchvision's
``vit_b_16`` count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.zoo.models.layers import ClassTokenPosEmbedding, SelfAttention

__all__ = ["ViTB16"]


class EncoderBlock(nn.Module):
    """Pre-LN encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads, causal=False)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, mlp)
        self.proj = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class ViTB16(nn.Module):
    """ViT-B/16 classifier.

    :param num_classes: classifier outputs.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        dim = 768
        self.patch_embed = nn.Conv2d(3, dim, 16, stride=16)
        self.embed = ClassTokenPosEmbedding((224 // 16) ** 2, dim)
        self.layers = nn.ModuleList(EncoderBlock(dim, 12, 3072) for _ in range(12))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.patch_embed(x).flatten(2).transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x)[:, 0])
