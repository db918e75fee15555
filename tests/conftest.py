import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(int(os.environ.get("DSG_VIZ_TEST_THREADS", "2")))  # 1 on a busy machine

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DSG_VIZ_DATA_ROOT", REPO.parent / "shared"))
JPEG_CKPT = SHARED / "models" / "cifar10" / "resnet20_cifar10_jpeg.pt"


@pytest.fixture(scope="session", autouse=True)
def sample_cache(tmp_path_factory) -> Path:
    """One sample cache (dsg_viz.cache) for the whole run, never the checkout's runs/cache."""
    path = tmp_path_factory.mktemp("sample_cache")
    old = os.environ.get("DSG_VIZ_SAMPLE_CACHE")
    os.environ["DSG_VIZ_SAMPLE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DSG_VIZ_SAMPLE_CACHE", None)
    else:
        os.environ["DSG_VIZ_SAMPLE_CACHE"] = old


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (SHARED / "datasets" / "cifar10-jpeg").is_dir():
        pytest.skip(f"real data not found under {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def resnet20(data_root):
    from dsg_viz import create_model

    return create_model("resnet20_cifar10", str(JPEG_CKPT))


@pytest.fixture
def tiny():
    from dsg_viz import create_model

    return create_model("tiny_bn")


@pytest.fixture(scope="session")
def test_subset(data_root):
    from dsg_viz.data import load_split

    s = load_split("test", data_root)
    idx = torch.randperm(len(s), generator=torch.Generator().manual_seed(0))[:300]
    return s.subset(idx)
