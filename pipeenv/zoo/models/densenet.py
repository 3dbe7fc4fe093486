"""DenseNet-121 (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

torchvision's layout: growth rate 32, blocks of 6, 12, 24 and 16 layers, bottleneck width 4x,
compression 0.5, 224x224 input, 1000 classes; 7,978,856 parameters, torchvision's count. Each
layer concatenates the outputs of all earlier layers of its block, so the operator graph has many
long skip edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseNet121"]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4 x growth), BN-ReLU-3x3 conv (growth) on the concatenated inputs."""

    def __init__(self, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(F.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    """``layers`` dense layers, each fed with the block input and every earlier layer's output."""

    def __init__(self, layers: int, in_ch: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth, bn_size) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.norm(x))))


class DenseNet121(nn.Module):
    """DenseNet-121 classifier.

    :param num_classes: classifier outputs.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        growth, bn_size = 32, 4
        self.conv0 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.norm0 = nn.BatchNorm2d(64)
        self.pool0 = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages: list[nn.Module] = []
        for i, layers in enumerate((6, 12, 24, 16)):
            stages.append(DenseBlock(layers, channels, growth, bn_size))
            channels += layers * growth
            if i < 3:
                stages.append(Transition(channels, channels // 2))
                channels //= 2
        self.blocks = nn.Sequential(*stages)
        self.norm5 = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(F.relu(self.norm0(self.conv0(x))))
        x = F.relu(self.norm5(self.blocks(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
