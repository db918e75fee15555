"""Model zoo: ``create_model(name)``, ``list_models()``, ``get_spec(name)`` and the checkpoint loader."""

from __future__ import annotations

import torch.nn as nn

from .checkpoint import load_checkpoint, read_state_dict, sha256_file
from .cifar_resnet import CifarResNet
from .registry import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, ModelSpec, create_model, get_spec,
                       list_models, register_model)
from .tiny import TinyBNNet

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model", "load_checkpoint",
           "read_state_dict", "sha256_file", "CifarResNet", "TinyBNNet"]

_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_CIFAR_CKPT = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
               56: "resnet56-4bfd9763.th"}

for _depth in (20, 32, 44, 56):
    _n = (_depth - 2) // 6
    register_model(
        ModelSpec(name=f"resnet{_depth}_cifar10", input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD,
                  num_classes=10, num_bn=6 * _n + 1, dataset="cifar10", default_checkpoint=_CIFAR_CKPT[_depth],
                  checkpoint_url=_AKAMASTER + _CIFAR_CKPT[_depth]),
        (lambda n=_n: CifarResNet(n)),
    )


def _torchvision(name: str) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None)


# ImageNet weights are never downloaded implicitly: --weights PATH (a torchvision state dict), or the file that
# `dsg-viz fetch --imagenet-weights NAME` writes to <data-root>/models/imagenet/NAME.pth (the default checkpoint)
for _name, _nbn in (("resnet18", 20), ("resnet50", 53), ("mobilenet_v2", 52)):
    register_model(
        ModelSpec(name=_name, input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000,
                  num_bn=_nbn, dataset="imagenet", default_checkpoint=f"{_name}.pth"),
        (lambda n=_name: _torchvision(n)),
    )

register_model(
    ModelSpec(name="tiny_bn", input_size=(3, 16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4,
              num_bn=3, dataset="synthetic"),
    TinyBNNet,
)
