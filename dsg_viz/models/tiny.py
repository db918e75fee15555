"""A tiny BatchNorm CNN for fast tests (3 BN layers, 16×16 inputs, 4 classes)."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyBNNet(nn.Module):
    """conv-bn-relu ×3 (8/16/16 channels, one stride-2) → avgpool → linear. Random but *non-trivial* BN stats.

    The BN running statistics are initialized to non-default values so that BN-alignment losses are informative.
    """

    def __init__(self, num_classes: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(16, num_classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                    if m.bias is not None:
                        m.bias.zero_()
                if isinstance(m, nn.BatchNorm2d):
                    c = m.num_features
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the penultimate features, shape [B, 16]."""
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.pool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))
