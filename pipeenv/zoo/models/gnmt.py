"""GNMT-style LSTM sequence-to-sequence model (Wu et al., "Google's Neural Machine Translation
System", 2016), in the four-layer shape of the MLPerf training reference that PipeDream profiled.

Encoder: embedding, one bidirectional LSTM layer, three LSTM layers (residual from the third).
Decoder: embedding, an LSTM whose outputs query a normalised Bahdanau attention over the encoder
outputs, three LSTM layers fed with [input, context] (residual from the second), and a
classifier. Width 1024, vocabulary 32,320, source and target length 50, teacher forcing. Source
and target embeddings are separate, so no parameter belongs to two nodes: 193,766,977
parameters (MLPerf shares one embedding and counts 160,671,297, 33,095,680 fewer).

Each LSTM layer is marked ``fx_fused``: PyTorch without cuDNN unrolls it into per-timestep ops
that re-read the weights and accumulate their gradients at every step, which cuDNN's fused
kernels do not, so the analytic costs count its memory traffic once per pass
(:mod:`pipeenv.zoo.counting`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

__all__ = ["GNMT"]


class LSTMLayer(nn.Module):
    """One (optionally bidirectional) LSTM layer returning only its output sequence."""

    fx_leaf: ClassVar[bool] = True
    fx_fused: ClassVar[bool] = True

    def __init__(self, in_dim: int, hidden: int, *, bidirectional: bool = False) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class BahdanauAttention(nn.Module):
    """Normalised additive attention: ``score = g v/|v| . tanh(Wq q + Wk k + b)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_q = nn.Linear(dim, dim, bias=False)
        self.linear_k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.scale = nn.Parameter(torch.ones(()))

    fx_leaf: ClassVar[bool] = True

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = self.linear_q(query).unsqueeze(2)
        k = self.linear_k(keys).unsqueeze(1)
        v = self.scale * self.v / self.v.norm()
        scores = torch.tanh(q + k + self.bias) @ v
        return torch.softmax(scores, dim=-1) @ keys


class GNMT(nn.Module):
    """GNMT: source and target token ids ``[batch, 50]`` to target logits.

    :param vocab: shared source/target vocabulary size.
    :param dim: embedding and LSTM width.
    """

    def __init__(self, vocab: int = 32320, dim: int = 1024) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(vocab, dim)
        self.enc_1 = LSTMLayer(dim, dim, bidirectional=True)
        self.enc_2 = LSTMLayer(2 * dim, dim)
        self.enc_3 = LSTMLayer(dim, dim)
        self.enc_4 = LSTMLayer(dim, dim)
        self.tgt_embed = nn.Embedding(vocab, dim)
        self.dec_att_lstm = LSTMLayer(dim, dim)
        self.attention = BahdanauAttention(dim)
        self.dec_2 = LSTMLayer(2 * dim, dim)
        self.dec_3 = LSTMLayer(2 * dim, dim)
        self.dec_4 = LSTMLayer(2 * dim, dim)
        self.classifier = nn.Linear(dim, vocab)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        x = self.enc_2(self.enc_1(self.src_embed(src)))
        x = x + self.enc_3(x)
        memory = x + self.enc_4(x)
        y = self.dec_att_lstm(self.tgt_embed(tgt))
        context = self.attention(y, memory)
        y = self.dec_2(torch.cat([y, context], 2))
        y = y + self.dec_3(torch.cat([y, context], 2))
        y = y + self.dec_4(torch.cat([y, context], 2))
        return self.classifier(y)
