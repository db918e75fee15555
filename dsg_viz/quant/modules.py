"""Quantized layers: :class:`QuantConv2d` / :class:`QuantLinear` (fake-quantized weights) and :class:`QuantAct`
(an activation module followed by an :class:`ActQuantizer`).

``QuantConv2d`` and ``QuantLinear`` subclass ``nn.Conv2d`` / ``nn.Linear`` and keep the parameter names
(``weight``, ``bias``), so a quantized model's state dict holds the original keys plus the quantizer buffers.
With the weight quantizer disabled they compute exactly what the float layer computes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantizer import ActQuantizer, WeightQuantizer


def _adopt(q: nn.Module, src: nn.Module, weight_quantizer: WeightQuantizer) -> nn.Module:
    """Give the (meta-device) layer ``q`` the Parameters and training flag of ``src`` and its weight quantizer."""
    q.weight = src.weight
    q.bias = src.bias
    q.train(src.training)
    q.weight_quantizer = weight_quantizer
    return q


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weights [C_out, C_in/groups, kH, kW] pass through ``weight_quantizer`` on each forward.

    Input [B, C_in, H, W] → output [B, C_out, H', W'] (as the float conv).
    """

    weight_quantizer: WeightQuantizer

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quantizer: WeightQuantizer) -> "QuantConv2d":
        """Return a ``QuantConv2d`` sharing ``conv``'s weight and bias ``Parameter`` objects (no copy)."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device="meta")
        return _adopt(q, conv, weight_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight_quantizer(self.weight), self.bias)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weights [out, in] pass through ``weight_quantizer``. Input [..., in] → output [..., out]."""

    weight_quantizer: WeightQuantizer

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_quantizer: WeightQuantizer) -> "QuantLinear":
        """Return a ``QuantLinear`` sharing ``linear``'s weight and bias ``Parameter`` objects (no copy)."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        return _adopt(q, linear, weight_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_quantizer(self.weight), self.bias)


class QuantAct(nn.Module):
    """``quantizer(act(x))``: an activation module (``nn.ReLU`` / ``nn.ReLU6``) and its activation quantizer.

    Shapes are those of ``act``. If the original model calls the same activation module at several places (as
    torchvision's ResNet blocks do with ``self.relu``), all those calls share this one quantizer, and its
    calibrated range covers the activations of every call site.
    """

    def __init__(self, act: nn.Module, quantizer: ActQuantizer):
        super().__init__()
        self.act = act
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.act(x))
