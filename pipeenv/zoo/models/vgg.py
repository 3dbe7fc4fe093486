"""VGG-16 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015), configuration D without batch norm.

torchvision's layout (adaptive 7x7 average pool before the classifier), dropout left out.
224x224 RGB input, 1000 classes; 138,357,544 parameters, the published and torchvision count.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG16"]

# Configuration D: output channels of each 3x3 convolution, "M" for a 2x2 max pool.
_CONFIG_D: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG16(nn.Module):
    """VGG-16: 13 convolutions in five pooled groups, then three fully connected layers.

    :param num_classes: classifier outputs.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _CONFIG_D:
            if item == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                assert isinstance(item, int)
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU()]
                in_ch = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
