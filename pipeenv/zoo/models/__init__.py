"""The zoo's model registry: how to build each model, feed it and train it.

A :class:`ModelSpec` names a model and says where its code is (plain torch, no downloads; the
module is imported only when the model is built, so listing the zoo does not import torch), what
one sample of input looks like, what its training target is, and which conventions its exact
parameter count follows. Every zoo model is trained with cross-entropy against integer labels.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "InputSpec", "ModelSpec"]


@dataclass(frozen=True)
class InputSpec:
    """One model input, per sample.

    :param name: argument name of the model's ``forward``.
    :param shape: shape of one sample (the microbatch dimension is prepended).
    :param token_range: for integer token ids, the exclusive upper bound; 0 for float images.
    """

    name: str
    shape: tuple[int, ...]
    token_range: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model.

    :param name: zoo name (``pipeenv zoo list``).
    :param family: architecture family.
    :param factory: ``"module:function"`` under :mod:`pipeenv.zoo.models` that builds it.
    :param inputs: the inputs of ``forward``, in order.
    :param target_shape: shape of one sample's integer label(s).
    :param classes: labels are drawn from ``range(classes)``.
    :param params: exact parameter count (a test checks it).
    :param convention: what the count includes (tied weights, heads).
    :param dtype: default dtype of the shipped graph.
    :param microbatch_size: default microbatch size of the shipped graph.
    :param tiny: a small model for CPU validation (the others are costed on the meta device).
    """

    name: str
    family: str
    factory: str
    inputs: tuple[InputSpec, ...]
    target_shape: tuple[int, ...]
    classes: int
    params: int
    convention: str
    dtype: str = "float32"
    microbatch_size: int = 8
    tiny: bool = False

    def build(self) -> nn.Module:
        """Build the model (under ``torch.device("meta")`` to skip allocating weights)."""
        module, function = self.factory.split(":")
        factory = getattr(importlib.import_module(f"pipeenv.zoo.models.{module}"), function)
        built: nn.Module = factory()
        return built


def _image(size: int) -> tuple[InputSpec, ...]:
    return (InputSpec("x", (3, size, size)),)


def _tokens(seq: int, vocab: int) -> tuple[InputSpec, ...]:
    return (InputSpec("ids", (seq,), vocab),)


_SPECS = (
    ModelSpec("tiny-gpt", "gpt2", "gpt:tiny_gpt", _tokens(128, 512), (128,), 512,
              3_323_392, "4 blocks of width 256, tied embeddings", tiny=True),
    ModelSpec("tiny-inception", "inception", "inception:TinyInception", _image(32), (), 10,
              92_170, "3 Inception-A-like cells on 32x32 images", tiny=True),
    ModelSpec("resnet50", "resnet", "resnet:ResNet50", _image(224), (), 1000,
              25_557_032, "torchvision ResNet-50 (v1.5)"),
    ModelSpec("vgg16", "vgg", "vgg:VGG16", _image(224), (), 1000,
              138_357_544, "VGG-16 configuration D, no batch norm"),
    ModelSpec("inception_v3", "inception", "inception:InceptionV3", _image(299), (), 1000,
              23_834_568, "without the auxiliary head (27,161,264 with it)"),
    ModelSpec("densenet121", "densenet", "densenet:DenseNet121", _image(224), (), 1000,
              7_978_856, "torchvision DenseNet-121"),
    ModelSpec("gpt2", "gpt2", "gpt:gpt2_small", _tokens(1024, 50257), (1024,), 50257,
              124_439_808, "GPT-2 small, tied embeddings", dtype="bfloat16"),
    ModelSpec("gpt2-medium", "gpt2", "gpt:gpt2_medium", _tokens(1024, 50257), (1024,), 50257,
              354_823_168, "GPT-2 medium, tied embeddings", dtype="bfloat16"),
    ModelSpec("gpt2-xl", "gpt2", "gpt:gpt2_xl", _tokens(1024, 50257), (1024,), 50257,
              1_557_611_200, "GPT-2 XL, tied embeddings", dtype="bfloat16"),
    ModelSpec("bert_large", "bert", "bert:BertLarge", _tokens(128, 30522), (), 2,
              335_143_938, "encoder + pooler 335,141,888, plus a 2-way classifier",
              dtype="bfloat16"),
    ModelSpec("vit_b16", "vit", "vit:ViTB16", _image(224), (), 1000,
              86_567_656, "torchvision vit_b_16", dtype="bfloat16"),
    ModelSpec("gnmt", "gnmt", "gnmt:GNMT",
              (InputSpec("src", (50,), 32320), InputSpec("tgt", (50,), 32320)), (50,), 32320,
              193_766_977, "MLPerf GNMT shape, separate embeddings"),
    ModelSpec("llama-7b", "llama", "llama:Llama7B", _tokens(2048, 32000), (2048,), 32000,
              6_738_415_616, "Llama-2-7B, untied output, sequence 2048", dtype="bfloat16"),
)  # fmt: skip

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
