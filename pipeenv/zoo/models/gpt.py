"""GPT-2 (Radford et al., "Language Models are Unsupervised Multitask Learners", 2019) and
``tiny-gpt``, a few small blocks for CPU checks.

Pre-LayerNorm decoder blocks with learned absolute positions and a language-model head tied to
the token embedding, as in the released GPT-2: the shared weight is counted once, on the
embedding node (:class:`~pipeenv.zoo.models.layers.TiedLMHead`). With tying the parameter counts
are 124,439,808 (small), 354,823,168 (medium) and 1,557,611,200 (XL), the counts of the
HuggingFace checkpoints.

Weights are initialised as GPT-2's: linear and embedding weights normal with standard deviation
0.02, biases zero, LayerNorm ones and zeros, and the projections that write into the residual
stream scaled by ``1 / sqrt(2 * layers)`` (§2.3 of the paper). With the tied head this makes the
logits small at the start, so the initial loss is about ``ln(vocab)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeenv.zoo.models.layers import SelfAttention, TiedLMHead, TokenPosEmbedding

__all__ = [
    "GPT",
    "GPT2_MEDIUM",
    "GPT2_SMALL",
    "GPT2_XL",
    "INIT_STD",
    "TINY_GPT",
    "GPTConfig",
    "gpt2_medium",
    "gpt2_small",
    "gpt2_xl",
    "tiny_gpt",
]


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2-style model."""

    vocab: int
    context: int
    layers: int
    dim: int
    heads: int


GPT2_SMALL = GPTConfig(vocab=50257, context=1024, layers=12, dim=768, heads=12)
GPT2_MEDIUM = GPTConfig(vocab=50257, context=1024, layers=24, dim=1024, heads=16)
GPT2_XL = GPTConfig(vocab=50257, context=1024, layers=48, dim=1600, heads=25)
TINY_GPT = GPTConfig(vocab=512, context=128, layers=4, dim=256, heads=4)
INIT_STD = 0.02


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """GPT-2-style decoder: token ids ``[batch, seq]`` to logits ``[batch, seq, vocab]``.

    :param config: the model shape.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.embed = TokenPosEmbedding(config.vocab, config.context, config.dim)
        self.h = nn.ModuleList(Block(config.dim, config.heads) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.dim)
        self.lm_head = TiedLMHead(self.embed.tokens)
        self._init_weights(config.layers)

    def _init_weights(self, layers: int) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        residual = [
            m
            for block in self.modules()
            if isinstance(block, Block)
            for m in (block.attn.proj, block.proj)
        ]
        for proj in residual:
            nn.init.normal_(proj.weight, std=INIT_STD / math.sqrt(2 * layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2_small() -> GPT:
    """GPT-2 small (124M)."""
    return GPT(GPT2_SMALL)


def gpt2_medium() -> GPT:
    """GPT-2 medium (355M)."""
    return GPT(GPT2_MEDIUM)


def gpt2_xl() -> GPT:
    """GPT-2 XL (1.5B)."""
    return GPT(GPT2_XL)


def tiny_gpt() -> GPT:
    """``tiny-gpt``: 4 blocks of width 256, context 128, vocabulary 512."""
    return GPT(TINY_GPT)
