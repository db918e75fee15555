"""ImageNet-style image folders for the 224 × 224 models: lazy, batch-wise decoded splits.

Layout (the torchvision ``ImageFolder`` convention), looked up under the data root ``R`` in this order::

    R/val/<wnid>/*.JPEG               R/train/<wnid>/*.JPEG            (R is the ImageNet folder itself), or
    R/datasets/imagenet/val/<wnid>/   R/datasets/imagenet/train/<wnid>/ (R is the project's data root)

Labels are the positions of the class folders in sorted order. For the real ImageNet (1,000 ``nXXXXXXXX`` folders)
that is the standard class index every torchvision / pytorchcv checkpoint uses. A folder with fewer classes (a test
fixture, a subset) is accepted with a :class:`ImageNetSubsetWarning`: its labels are 0..K-1 in sorted order and
match the checkpoint's class indices only if the folders are the first K wnids.

Splits: ``test`` is the ``val/`` folder (the 50,000 images every paper reports on); ``val`` (for tuning any
setting) is a held-out part of ``train/``: the last :data:`VAL_PER_CLASS` images of each class; real-image
calibration draws from the rest of ``train/``. The flat ``val/`` folder of the original archive (50,000 JPEGs, no
class folders) is refused with a note on how to sort it.

Images are decoded only when a batch is asked for (``split.images[a:b]``: standard preprocessing, resize to
``size / 0.875`` = 256 on the short side, bilinear with antialiasing, then center crop ``size`` = 224, uint8), so
50,000 images never sit in memory at once. A :class:`ImageFolderSplit` has the interface of
:class:`dsg_viz.data.Split` (``images``, ``labels``, ``len``, ``subset``) that :func:`dsg_viz.evaluate.evaluate`
uses.
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

EXTENSIONS = (".jpeg", ".jpg", ".png")
NUM_CLASSES = 1000
VAL_PER_CLASS = 10  # the tuning split: the last 10 train images of each class (10,000 for the full ImageNet)
CROP_RATIO = 0.875  # resize = size / 0.875: 256 for 224 (the standard ImageNet evaluation preprocessing)
_WNID = re.compile(r"^n\d{8}$")

__all__ = ["ImageFolderSplit", "ImageNetSubsetWarning", "find_folder", "load_imagenet_split", "sample_calibration",
           "decode", "preprocess"]


class ImageNetSubsetWarning(UserWarning):
    """The folder holds fewer than 1,000 classes: labels follow the sorted folders, not the ImageNet indices."""


def find_folder(data_root: str | os.PathLike | None, split: str) -> Path:
    """Return the ``split`` folder (``"val"`` or ``"train"``) under the data root: ``R/<split>`` or
    ``R/datasets/imagenet/<split>``. Raises :class:`DataError` naming both places when neither exists."""
    from .data import resolve_data_root

    root = resolve_data_root(data_root)
    cands = [root / split, root / "datasets" / "imagenet" / split]
    for c in cands:
        if c.is_dir():
            return c
    what = ("ImageNet validation images (the test split of every paper)" if split == "val" else
            "ImageNet train images (real-image calibration and the tuning split need them)")
    raise DataError(f"{what} not found: looked for {cands[0]} and {cands[1]}, each holding one folder per class "
                    f"(<wnid>/*.JPEG); point --data-root at the folder that holds {split}/")


def _scan(folder: Path) -> tuple[list[str], list[str], list[int]]:
    """Return ``(classes, files, labels)`` of an ImageFolder; checks the class folders."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        flat = any(p.suffix.lower() in EXTENSIONS for p in folder.iterdir())
        hint = (" It holds images directly: the original validation archive is flat; sort it into one folder per "
                "wnid (e.g. with the widely used valprep.sh) first." if flat else "")
        raise DataError(f"{folder} holds no class folders (<wnid>/*.JPEG).{hint}")
    files, labels = [], []
    for ci, c in enumerate(classes):
        fs = sorted(str(f) for f in (folder / c).iterdir() if f.suffix.lower() in EXTENSIONS)
        files += fs
        labels += [ci] * len(fs)
    if not files:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under the class folders of {folder}")
    odd = [c for c in classes if not _WNID.match(c)]
    if len(classes) > NUM_CLASSES:
        raise DataError(f"{folder} holds {len(classes)} class folders; ImageNet has {NUM_CLASSES}")
    if len(classes) == NUM_CLASSES and odd:
        raise DataError(f"{folder} holds 1,000 folders but {len(odd)} are not wnids (e.g. {odd[0]!r}); the class "
                        "index is the position of the wnid in sorted order, so the folders must be named nXXXXXXXX")
    if len(classes) < NUM_CLASSES:
        warnings.warn(f"{folder} holds {len(classes)} class folders, not {NUM_CLASSES}: labels are "
                      f"0..{len(classes) - 1} in sorted folder order and match the checkpoint's ImageNet classes only "
                      f"if these are the first {len(classes)} wnids; accuracies are not comparable to the paper's",
                      ImageNetSubsetWarning, stacklevel=3)
    return classes, files, labels


def preprocess(size: int = 224):
    """Return the standard evaluation transform: PIL image → uint8 tensor [3, size, size] (resize the short side
    to ``round(size / 0.875)``, bilinear with antialiasing, center crop ``size``)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(round(size / CROP_RATIO), interpolation=T.InterpolationMode.BILINEAR,
                               antialias=True), T.CenterCrop(size), T.PILToTensor()])


def decode(files: list[str], size: int = 224, workers: int | None = None) -> torch.Tensor:
    """Return the images ``files`` decoded and preprocessed as uint8 [N, 3, size, size] (RGB)."""
    from PIL import Image

    tf = preprocess(size)

    def one(f: str) -> torch.Tensor:
        try:
            with Image.open(f) as im:
                return tf(im.convert("RGB"))
        except OSError as e:
            raise DataError(f"cannot decode image {f} ({e})") from None

    if not files:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    workers = workers or min(4, os.cpu_count() or 1, len(files))
    if workers <= 1:
        return torch.stack([one(f) for f in files])
    with ThreadPoolExecutor(workers) as ex:  # PIL releases the GIL while decoding and resizing
        return torch.stack(list(ex.map(one, files)))


class _LazyImages:
    """``split.images``: indexing (an int, a slice, an index tensor or list) decodes just those images."""

    def __init__(self, split: "ImageFolderSplit"):
        self._split = split

    def __len__(self) -> int:
        return len(self._split.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self._split.size, self._split.size)

    dtype = torch.uint8

    def __getitem__(self, idx) -> torch.Tensor:
        files = self._split.files
        if isinstance(idx, int):
            return decode([files[idx]], self._split.size)[0]
        if isinstance(idx, slice):
            return decode(files[idx], self._split.size)
        idx = torch.as_tensor(idx)
        if idx.dim() == 0:
            return decode([files[int(idx)]], self._split.size)[0]
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        return decode([files[i] for i in idx.tolist()], self._split.size)


@dataclass(frozen=True)
class ImageFolderSplit:
    """A lazily decoded split: ``files`` (paths), ``labels`` int64 [N], images ``size`` × ``size``.

    ``images[a:b]`` (or any index) returns uint8 [B, 3, size, size] decoded on demand, as :class:`dsg_viz.data.Split`
    does from memory; ``subset(idx)`` returns another lazy split; ``load()`` decodes everything into a
    :class:`~dsg_viz.data.Split` (only for small subsets).
    """

    files: tuple[str, ...]
    labels: torch.Tensor
    size: int = 224
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.files)

    @property
    def images(self) -> _LazyImages:
        return _LazyImages(self)

    def subset(self, idx) -> "ImageFolderSplit":
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        ii = idx.tolist()
        return ImageFolderSplit(tuple(self.files[i] for i in ii), self.labels[idx], self.size, self.classes)

    def load(self):
        """Return all images decoded, as an in-memory :class:`~dsg_viz.data.Split`."""
        from .data import Split

        return Split(self.images[:], self.labels.clone())


def _folder_split(folder: Path, size: int) -> ImageFolderSplit:
    classes, files, labels = _scan(folder)
    return ImageFolderSplit(tuple(files), torch.tensor(labels, dtype=torch.int64), size, tuple(classes))


def _heldout_mask(labels: torch.Tensor, per_class: int = VAL_PER_CLASS) -> torch.Tensor:
    """Return a bool mask of the tuning split: the last ``per_class`` images of each class (files sorted), at most
    half of a class (so a small folder keeps train images for calibration)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique(sorted=True).tolist():
        ci = (labels == c).nonzero().flatten()
        k = min(per_class, len(ci) // 2)
        if k:
            mask[ci[-k:]] = True
    return mask


def load_imagenet_split(split: str = "test", data_root: str | os.PathLike | None = None,
                        size: int = 224) -> ImageFolderSplit:
    """Return a lazy ImageNet split: ``"test"`` = the ``val/`` folder (what papers report), ``"val"`` = the tuning
    split (last :data:`VAL_PER_CLASS` images per class of ``train/``), ``"train"`` = the rest of ``train/``."""
    if split == "test":
        return _folder_split(find_folder(data_root, "val"), size)
    if split in ("train", "val"):
        full = _folder_split(find_folder(data_root, "train"), size)
        held = _heldout_mask(full.labels)
        return full.subset(held if split == "val" else ~held)
    raise DataError(f"unknown ImageNet split {split!r}; use 'test' (the val/ folder), 'val' (held-out train images, "
                    "for tuning) or 'train'")


def sample_calibration(n: int, seed: int = 0, data_root: str | os.PathLike | None = None, size: int = 224):
    """Return ``n`` real ImageNet train images (never ``val/``, never the tuning split), drawn uniformly with
    ``seed`` and decoded: a :class:`~dsg_viz.data.Split` with uint8 [n, 3, size, size] images."""
    pool = load_imagenet_split("train", data_root, size)
    if n > len(pool):
        raise DataError(f"asked for {n} calibration images but the ImageNet train pool has {len(pool)} "
                        f"(after holding out {VAL_PER_CLASS} per class for tuning)")
    g = torch.Generator().manual_seed(seed)
    return pool.subset(torch.randperm(len(pool), generator=g)[:n]).load()
