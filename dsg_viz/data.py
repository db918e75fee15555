"""Real data: the data-root rule, CIFAR-10 splits (JPEG ImageFolder or torchvision batches), the validation
subset, a calibration sampler and normalization.

Data root rule, used everywhere: ``--data-root`` flag > ``$DSG_VIZ_DATA_ROOT`` > ``./data``. Layout::

    <root>/datasets/cifar10-jpeg/{train,test}/<class>/*.jpg    (ImageFolder), or
    <root>/datasets/cifar-10-batches-py/                       (torchvision's own format)
    <root>/models/cifar10/*.th|*.pt

Decoded splits are cached as uint8 tensors under ``$DSG_VIZ_CACHE`` (default ``~/.cache/dsg_viz``) so that a
second evaluation does not decode 10,000 JPEGs again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VAL_PER_CLASS = 500  # validation subset: the last 500 train images of each class (5,000 in all)


def resolve_data_root(flag: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``flag`` if given, else ``$DSG_VIZ_DATA_ROOT``, else ``./data``."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("DSG_VIZ_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path("data")


def cache_dir() -> Path:
    """Return (and create) the cache directory: ``$DSG_VIZ_CACHE`` or ``~/.cache/dsg_viz``."""
    d = Path(os.environ.get("DSG_VIZ_CACHE", Path.home() / ".cache" / "dsg_viz")).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


def resolve_checkpoint(checkpoint: str | None, default_name: str | None, data_root: str | None = None,
                       dataset: str = "cifar10") -> str | None:
    """Return a checkpoint path: ``checkpoint`` as given, or ``<root>/models/<dataset>/<default_name>``."""
    if checkpoint:
        return checkpoint
    if default_name is None:
        return None
    return str(resolve_data_root(data_root) / "models" / dataset / default_name)


RANDOM_WEIGHTS = "random"  # --weights random: a random init, asked for explicitly (smoke tests, timing)


def resolve_model_checkpoint(spec, given: str | None, data_root: str | os.PathLike | None = None) -> str | None:
    """Return the checkpoint of a model with spec ``spec``: ``given`` (a path) as is; ``"random"`` → ``None`` (random
    init, with a warning); nothing given → ``<root>/models/<dataset>/<spec.default_checkpoint>`` (``None`` for a model
    without one, e.g. ``tiny_bn``).

    An ImageNet model never falls back to a random init or a download silently: without ``given`` and without the
    file that ``dsg-viz fetch --imagenet-weights`` writes, this raises :class:`CheckpointError` saying what to pass.
    """
    import warnings

    from .errors import CheckpointError

    if given is not None and str(given).strip().lower() == RANDOM_WEIGHTS:
        warnings.warn(f"{spec.name}: random-init weights (--weights random); accuracies are meaningless, use this only "
                      "for smoke tests and timing", UserWarning, stacklevel=2)
        return None
    ckpt = resolve_checkpoint(given, spec.default_checkpoint, data_root, spec.dataset)
    if not given and spec.dataset == "imagenet" and (ckpt is None or not Path(ckpt).is_file()):
        where = f" (no {ckpt})" if ckpt else ""
        raise CheckpointError(
            f"{spec.name} needs ImageNet weights{where}: pass --weights PATH (a torchvision state dict), run "
            f"'dsg-viz fetch --imagenet-weights {spec.name}' to download torchvision's published ones into the data "
            "root, or pass --weights random for a random init (smoke tests only)")
    return ckpt


@dataclass(frozen=True)
class Split:
    """A decoded split: ``images`` uint8 [N, 3, H, W] (RGB), ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.images[idx], self.labels[idx])


def _jpeg_dir(root: Path, split: str) -> Path:
    return root / "datasets" / "cifar10-jpeg" / split


def _decode_imagefolder(folder: Path) -> Split:
    import numpy as np
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if tuple(classes) != CIFAR10_CLASSES:
        raise DataError(f"{folder} should hold the 10 CIFAR-10 class folders, found {classes[:12]}; "
                        "see data/README.md for the layout")
    imgs, labels = [], []
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    files = [(f, ci) for ci, c in enumerate(classes) for f in sorted((folder / c).glob("*.jpg"))]
    for f, ci in tqdm(files, desc=f"decoding {folder.name}", leave=False, mininterval=1.0):
        with Image.open(f) as im:
            imgs.append(np.asarray(im.convert("RGB")))
        labels.append(ci)
    if not imgs:
        raise DataError(f"no JPEG images under {folder}; see data/README.md for the layout")
    images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(labels, dtype=torch.int64))


def load_split(split: str = "test", data_root: str | os.PathLike | None = None, cache: bool = True) -> Split:
    """Return the CIFAR-10 ``split`` (``"train"`` or ``"test"``) found under the data root, decoded.

    Raises :class:`DataError` naming the searched paths if neither layout is present.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    root = resolve_data_root(data_root)
    jpeg = _jpeg_dir(root, split)
    batches = root / "datasets" / "cifar-10-batches-py"
    if jpeg.is_dir():
        key = hashlib.sha1(str(jpeg.resolve()).encode()).hexdigest()[:10]
        cfile = cache_dir() / f"cifar10-jpeg-{split}-{key}.pt"
        if cache and cfile.is_file():
            try:
                from ._io import load

                d = load(cfile, "decoded-split cache")
                return Split(d["images"], d["labels"])
            except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt
                cfile.unlink(missing_ok=True)
        out = _decode_imagefolder(jpeg)
        if cache:
            from ._io import save

            save({"images": out.images, "labels": out.labels}, cfile)
        return out
    if batches.is_dir():
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root / "datasets"), train=(split == "train"), download=False)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.int64))
    raise DataError(
        f"CIFAR-10 {split} split not found: looked for {jpeg} and {batches}. Point --data-root or "
        "DSG_VIZ_DATA_ROOT at a folder with datasets/cifar10-jpeg/ (e.g. ../shared), or run 'dsg-viz fetch'")


def validation_indices(labels: torch.Tensor, per_class: int = VAL_PER_CLASS) -> torch.Tensor:
    """Return the indices of the fixed validation subset: the last ``per_class`` train images of each class."""
    idx = []
    for c in labels.unique(sorted=True).tolist():
        ci = (labels == c).nonzero().flatten()
        idx.append(ci[-per_class:])
    return torch.cat(idx)


def train_val_split(data_root: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """Return ``(train_minus_val, val)`` of the CIFAR-10 train split; tune every hyper-parameter on ``val``."""
    full = load_split("train", data_root)
    val = validation_indices(full.labels)
    mask = torch.ones(len(full), dtype=torch.bool)
    mask[val] = False
    return full.subset(mask.nonzero().flatten()), full.subset(val)


def sample_calibration(n: int, seed: int = 0, data_root: str | os.PathLike | None = None,
                       split: Split | None = None) -> Split:
    """Return ``n`` real train images (never test, never the validation subset), drawn uniformly with ``seed``."""
    if split is None:
        split, _ = train_val_split(data_root)
    if n > len(split):
        raise DataError(f"asked for {n} calibration images but the train pool has {len(split)}")
    g = torch.Generator().manual_seed(seed)
    return split.subset(torch.randperm(len(split), generator=g)[:n])


def sample_real(spec, n: int, seed: int = 0, data_root: str | os.PathLike | None = None) -> Split:
    """Return ``n`` real calibration images for a model with spec ``spec`` (uint8, decoded): CIFAR-10 train images
    (:func:`sample_calibration`) or ImageNet ``train/`` images (:func:`dsg_viz.imagenet.sample_calibration`); never
    test images, never the tuning split."""
    if spec.dataset == "cifar10":
        return sample_calibration(n, seed, data_root)
    if spec.dataset == "imagenet":
        from .imagenet import sample_calibration as imagenet_calibration

        return imagenet_calibration(n, seed, data_root, size=spec.input_size[-1])
    raise DataError(f"real samples exist only for CIFAR-10 and ImageNet models; {spec.name} is a {spec.dataset} model")


def forward_batch_size(spec, given: int | None, default: int) -> int:
    """Return the images per forward pass of calibration, reconstruction caching, evaluation and diagnostics.

    ImageNet-size inputs (>= 128 pixels): ``given`` (``--batch-size``), else 32, so that memory stays bounded at
    224 × 224 (docs/imagenet.md). Small inputs (CIFAR): ``default``, whatever ``given`` says, so that the published
    CIFAR numbers keep their exact forward batches (results do not depend on them up to float rounding)."""
    if spec.input_size[-1] >= 128:
        return int(given) if given else 32
    return default


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Map uint8 [N, 3, H, W] (or float in [0, 1]) images to the model's input space, float32."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """Inverse of :func:`normalize`: model-space float [N, 3, H, W] → [0, 1] (clamped)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0, 1)


def load_eval_split(spec, split: str = "test", data_root: str | os.PathLike | None = None) -> Split:
    """Return the evaluation split of ``spec.dataset``: CIFAR-10 ``test``/``train``/``val`` (the 5,000 held-out
    train images); ImageNet-size models read ``<root>/val/<wnid>/*.JPEG`` for ``test`` and ``<root>/train/`` for
    ``train``/``val``, lazily (:class:`dsg_viz.imagenet.ImageFolderSplit`, decoded batch by batch)."""
    if spec.dataset == "cifar10":
        if split == "val":
            return train_val_split(data_root)[1]
        return load_split(split, data_root)
    if spec.dataset == "imagenet":
        from .imagenet import load_imagenet_split

        return load_imagenet_split(split, data_root, size=spec.input_size[-1])
    raise DataError(f"no evaluation data for dataset {spec.dataset!r}")
