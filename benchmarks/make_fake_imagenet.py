"""Write a tiny fake ImageNet folder (random pixels, several image sizes) to smoke-test the ImageNet path without
ImageNet: ``DEST/val/<wnid>/*.JPEG`` and ``DEST/train/<wnid>/*.JPEG`` (tests/test_imagenet.py builds the same).

    python benchmarks/make_fake_imagenet.py /tmp/fake_imagenet [--classes 3 --val 4 --train 6]
    dsg-viz eval --model resnet18 --weights random --data-root /tmp/fake_imagenet --limit 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((300, 400), (256, 256), (500, 333), (180, 240), (224, 300), (640, 480))  # (H, W)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dest")
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--val", type=int, default=4, help="images per class in val/")
    p.add_argument("--train", type=int, default=6, help="images per class in train/")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    wnids = [f"n{1440764 + 3000 * i:08d}" for i in range(a.classes)]
    for split, per in (("val", a.val), ("train", a.train)):
        for w in wnids:
            d = Path(a.dest) / split / w
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                h, wd = SIZES[i % len(SIZES)]
                img = rng.integers(0, 256, (h, wd, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{w}_{i}.JPEG", quality=90)
    print(f"wrote {a.classes} classes × ({a.val} val + {a.train} train) images under {a.dest}")


if __name__ == "__main__":
    main()
