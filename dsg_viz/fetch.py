"""``dsg-viz fetch``: download CIFAR-10 (through torchvision) and the published ResNet checkpoints into a data root;
with ``--imagenet-weights`` torchvision's published ImageNet weights (:func:`fetch_imagenet_weights`).

Downloads are written to a temporary file and renamed only after the size/SHA-256 check, so an interrupted
download never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from .errors import DataError

# SHA-256 of the published checkpoints (from ../shared/models/cifar10/README.md); None = not pinned.
CHECKPOINT_SHA256 = {
    "resnet20-12fca82f.th": "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    "resnet32-d509ac18.th": "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    "resnet44-014dd654.th": "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
    "resnet56-4bfd9763.th": None,
}


def download_url(url: str, dest: str | os.PathLike, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` (http(s):// or file://) to ``dest`` atomically; verify ``sha256`` when given."""
    from . import _io

    dest = Path(dest)
    h = hashlib.sha256()
    try:
        with _io.atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
            if sha256 is not None and h.hexdigest() != sha256:
                raise DataError(f"download of {url} has SHA-256 {h.hexdigest()[:12]}..., expected {sha256[:12]}...; "
                                "the file was discarded, retry or check the URL")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot download {url} ({type(e).__name__}: {e}); check your network or the URL") from None
    return dest


# torchvision weights fetched by `dsg-viz fetch --imagenet-weights`: IMAGENET1K_V1, the original releases (top-1
# 69.76 / 76.13 / 71.88 in torchvision's own evaluation); the paper's ResNets are pytorchcv's (71.47 / 77.72)
IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights.IMAGENET1K_V1", "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
                    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1"}


def fetch_imagenet_weights(data_root: str | os.PathLike, names: list[str], progress: bool = True) -> list[str]:
    """Download torchvision's published ImageNet weights of ``names`` into ``<root>/models/imagenet/<name>.pth``
    (the default checkpoint of those models) and return the paths. Only called when asked for
    (``dsg-viz fetch --imagenet-weights``): nothing else in dsg_viz downloads weights.

    Uses torchvision's own download (``torch.hub.load_state_dict_from_url`` with its hash check); an existing file is
    kept. The file is a plain state dict, read later with ``torch.load(weights_only=True)``.
    """
    import torch
    import torchvision.models as tvm

    from .data import resolve_data_root
    from .models import get_spec

    root = resolve_data_root(data_root)
    dest_dir = root / "models" / "imagenet"
    out = []
    for name in names:
        spec = get_spec(name)
        if name not in IMAGENET_WEIGHTS:
            raise DataError(f"no published torchvision weights known for {name!r}; choose from "
                            f"{', '.join(IMAGENET_WEIGHTS)} or pass --weights PATH")
        dest = dest_dir / spec.default_checkpoint
        if dest.is_file():
            out.append(str(dest))
            continue
        enum_name, member = IMAGENET_WEIGHTS[name].split(".")
        weights = getattr(getattr(tvm, enum_name), member)
        dest_dir.mkdir(parents=True, exist_ok=True)
        try:
            sd = torch.hub.load_state_dict_from_url(weights.url, model_dir=str(dest_dir), progress=progress,
                                                    check_hash=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot download {name} weights from {weights.url} ({type(e).__name__}: {e}); check "
                            "your network, or download the file yourself and pass --weights PATH") from None
        from ._io import save

        save(sd, dest)
        Path(dest_dir / Path(weights.url).name).unlink(missing_ok=True)  # torchvision's copy, now saved as dest
        out.append(str(dest))
    return out


def fetch(data_root: str | os.PathLike, models: list[str] | None = None, dataset: bool = True,
          base_url: str | None = None) -> dict:
    """Download CIFAR-10 (torchvision format) and the published checkpoints of ``models`` into ``data_root``.

    ``base_url`` replaces the checkpoints' published base URL (tests point it at a ``file://`` folder).
    Returns ``{"dataset": path or None, "checkpoints": [paths]}``. Existing files with the right hash are kept.
    """
    from .data import resolve_data_root
    from .models import get_spec, sha256_file

    root = resolve_data_root(data_root)
    out: dict = {"dataset": None, "checkpoints": []}
    names = models if models is not None else ["resnet20_cifar10", "resnet32_cifar10", "resnet44_cifar10",
                                                "resnet56_cifar10"]
    for name in names:
        spec = get_spec(name)
        if not spec.checkpoint_url:
            raise DataError(f"model {name} has no published checkpoint; train one or pass --checkpoint")
        fname = spec.default_checkpoint
        url = spec.checkpoint_url if base_url is None else base_url.rstrip("/") + "/" + fname
        dest = root / "models" / spec.dataset / fname
        sha = CHECKPOINT_SHA256.get(fname)
        if dest.is_file() and (sha is None or sha256_file(dest) == sha):
            out["checkpoints"].append(str(dest))
            continue
        out["checkpoints"].append(str(download_url(url, dest, sha)))
    if dataset:
        from torchvision.datasets import CIFAR10

        ds_root = root / "datasets"
        ds_root.mkdir(parents=True, exist_ok=True)
        try:
            CIFAR10(str(ds_root), train=True, download=True)
            CIFAR10(str(ds_root), train=False, download=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot download CIFAR-10 into {ds_root} ({type(e).__name__}: {e})") from None
        tarball = ds_root / "cifar-10-python.tar.gz"
        tarball.unlink(missing_ok=True)
        out["dataset"] = str(ds_root / "cifar-10-batches-py")
    return out
