"""Building blocks shared by the zoo's transformer models.

Every parameter of a zoo model lives in a module that the tracer keeps as one graph node (a
leaf), so each parameter belongs to exactly one node of the operator graph. Modules that have
children but must stay one node set the class attribute ``fx_leaf = True``
(:func:`pipeenv.zoo.trace.trace` honours it). Dropout is left out of every zoo model: it has no
parameters, costs little, and leaving it out keeps a pipelined run numerically comparable to a
single-device one.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ClassTokenPosEmbedding",
    "RMSNorm",
    "RotaryAttention",
    "SelfAttention",
    "TiedLMHead",
    "TokenPosEmbedding",
]


class SelfAttention(nn.Module):
    """Multi-head self-attention as one node: fused QKV projection, SDPA, output projection.

    :param dim: model width.
    :param heads: number of heads (``dim`` must be divisible by it).
    :param causal: mask future positions (decoders).
    """

    fx_leaf: ClassVar[bool] = True

    def __init__(self, dim: int, heads: int, *, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, dim // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=self.causal
        )
        return self.proj(y.transpose(1, 2).reshape(batch, seq, dim))


class TokenPosEmbedding(nn.Module):
    """Token embedding plus learned absolute position embedding (GPT-2, BERT with one segment).

    :param vocab: vocabulary size.
    :param positions: maximum sequence length.
    :param dim: model width.
    :param segments: number of token types (BERT); 0 for none. All tokens use segment 0.
    """

    fx_leaf: ClassVar[bool] = True

    def __init__(self, vocab: int, positions: int, dim: int, *, segments: int = 0) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(positions, dim)
        self.segments = nn.Embedding(segments, dim) if segments else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(pos)
        if self.segments is not None:
            x = x + self.segments.weight[0]
        return x


class TiedLMHead(nn.Module):
    """Output projection that reuses a token embedding's weight (weight tying).

    The embedding is held in a tuple so that it is not registered a second time: the shared
    weight is owned, and counted, by the embedding's node only.

    :param embedding: the token embedding whose weight is reused.
    """

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.tied: tuple[nn.Embedding] = (embedding,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.tied[0].weight)


class ClassTokenPosEmbedding(nn.Module):
    """Prepend a learned class token and add a learned position embedding (ViT).

    :param tokens: number of patch tokens.
    :param dim: model width.
    """

    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, tokens + 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embedding


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019), as in Llama.

    :param dim: normalised width.
    :param eps: added to the mean square.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RotaryAttention(nn.Module):
    """Causal multi-head attention with rotary position embedding (Su et al. 2021), Llama style.

    Separate Q, K, V, O projections without bias; rotation by the "rotate half" formulation with
    base 10000; cos/sin tables are non-persistent buffers inside this module.

    :param dim: model width.
    :param heads: number of heads.
    :param max_seq: longest sequence the tables cover.
    """

    fx_leaf: ClassVar[bool] = True

    def __init__(self, dim: int, heads: int, max_seq: int) -> None:
        super().__init__()
        self.heads = heads
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        head_dim = dim // heads
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(max_seq).float(), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def _rotate(self, x: torch.Tensor, seq: int) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        cos: torch.Tensor = self.get_buffer("cos")[:seq].to(x.dtype)
        sin: torch.Tensor = self.get_buffer("sin")[:seq].to(x.dtype)
        return x * cos + rotated * sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        shape = (batch, seq, self.heads, dim // self.heads)
        q = self._rotate(self.wq(x).view(shape).transpose(1, 2), seq)
        k = self._rotate(self.wk(x).view(shape).transpose(1, 2), seq)
        v = self.wv(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(batch, seq, dim))
