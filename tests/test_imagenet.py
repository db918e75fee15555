"""ImageNet-size models (issue 17): a tiny fake ImageNet folder made here, random-init resnet18 / mobilenet_v2 at
224 × 224, every command for a few steps. Nothing is downloaded (torch.hub is patched to fail where it matters)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dsg_viz.cli import main
from dsg_viz.errors import CheckpointError, DataError
from dsg_viz.imagenet import ImageFolderSplit, ImageNetSubsetWarning, load_imagenet_split, preprocess

WNIDS = ("n01440764", "n01443537", "n01484850")
SIZES = ((300, 400), (256, 256), (500, 333), (180, 240), (224, 300), (640, 480))  # (H, W): resize + crop exercised

pytestmark = pytest.mark.filterwarnings("ignore::dsg_viz.imagenet.ImageNetSubsetWarning",
                                        "ignore:.*random-init weights:UserWarning")


def _write_folder(root, split: str, per_class: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for w in WNIDS:
        d = root / split / w
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, wd = SIZES[i % len(SIZES)]
            Image.fromarray(rng.integers(0, 256, (h, wd, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG", quality=90)


@pytest.fixture(scope="module")
def inet(tmp_path_factory):
    """A fake ImageNet root: val/ 3 wnids × 4 JPEGs, train/ 3 wnids × 6 JPEGs, random pixels, various sizes."""
    root = tmp_path_factory.mktemp("imagenet")
    _write_folder(root, "val", 4, 0)
    _write_folder(root, "train", 6, 1)
    return root


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Any attempt to download weights fails the test."""
    import torch.hub

    def refuse(*a, **k):
        raise AssertionError(f"a download was attempted: {a} {k}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


class NotWeights:
    """A pickled object that torch.load(weights_only=True) refuses."""


def run(capsys, *argv) -> dict:
    rc = main([*argv, "--json", "--device", "cpu"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    return json.loads(out.out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the data


def test_split_layout_labels_and_preprocessing(inet):
    from PIL import Image

    with pytest.warns(ImageNetSubsetWarning, match="3 class folders"):
        s = load_imagenet_split("test", inet)
    assert isinstance(s, ImageFolderSplit) and len(s) == 12
    assert s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted wnids
    assert s.images.shape == (12, 3, 224, 224)
    x = s.images[2:5]  # decoded on demand, uint8
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.uint8
    with Image.open(s.files[2]) as im:  # 500 × 333: short side → 256, center crop 224 (torchvision's transforms)
        ref = preprocess(224)(im.convert("RGB"))
    assert torch.equal(x[0], ref)
    sub = s.subset(torch.tensor([11, 0]))
    assert sub.labels.tolist() == [2, 0] and torch.equal(sub.images[0:1][0], s.images[11])
    assert sub.load().images.shape == (2, 3, 224, 224)


def test_train_val_calibration_disjoint(inet):
    from dsg_viz.data import sample_real
    from dsg_viz.models import get_spec

    train, val = load_imagenet_split("train", inet), load_imagenet_split("val", inet)
    assert len(train) + len(val) == 18 and not set(train.files) & set(val.files)
    assert sorted(val.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # held out: at most half of a class
    cal = sample_real(get_spec("resnet18"), 5, seed=0, data_root=inet)
    assert cal.images.shape == (5, 3, 224, 224) and cal.images.dtype == torch.uint8
    assert torch.equal(cal.images, sample_real(get_spec("resnet18"), 5, seed=0, data_root=inet).images)
    with pytest.raises(DataError, match="train pool has 9"):
        sample_real(get_spec("resnet18"), 10, data_root=inet)


def test_data_errors_are_clear(tmp_path, inet):
    with pytest.raises(DataError, match="val and .*datasets/imagenet/val"):
        load_imagenet_split("test", tmp_path)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="flat"):
        load_imagenet_split("test", tmp_path)
    other = tmp_path / "other"  # the project-data-root layout: <root>/datasets/imagenet/val
    (other / "datasets" / "imagenet").mkdir(parents=True)
    (other / "datasets" / "imagenet" / "val").symlink_to(inet / "val")
    assert len(load_imagenet_split("test", other)) == 12
    with pytest.raises(DataError, match="train images"):  # real calibration without train/ names the folder
        load_imagenet_split("train", other)


# ------------------------------------------------------------------------------------------------ weights


def test_weights_are_explicit(inet, tmp_path, capsys):
    from dsg_viz.cli._common import load_model
    from dsg_viz.cli import build_parser

    rc = main(["eval", "--model", "resnet18", "--data-root", str(inet)])  # no weights: an error, no download
    err = capsys.readouterr().err
    assert rc == 2 and "--weights PATH" in err and "--weights random" in err and "fetch --imagenet-weights" in err
    rc = main(["eval", "--model", "resnet18", "--dataset", "cifar10", "--weights", "random"])
    assert rc == 2 and "--dataset cifar10 does not fit" in capsys.readouterr().err
    args = build_parser().parse_args(["eval", "--model", "resnet18", "--weights", "random", "--device", "cpu"])
    with pytest.warns(UserWarning, match="random-init"):
        load_model(args)

    # a torchvision state dict is read with weights_only=True; the model gets exactly those weights
    from dsg_viz.models import create_model

    ref = create_model("resnet18")
    torch.manual_seed(0)
    for p in ref.parameters():
        p.data.normal_(0, 0.01)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    args = build_parser().parse_args(["eval", "--model", "resnet18", "--weights", str(tmp_path / "r18.pth"),
                                      "--device", "cpu", "--dataset", "imagenet"])
    model, ckpt, sha = load_model(args)
    assert ckpt == str(tmp_path / "r18.pth") and len(sha) == 64
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))

    torch.save({"state_dict": ref.state_dict(), "extra": NotWeights()}, tmp_path / "pickled.pth")
    args.weights = str(tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(args)


def test_fetch_downloads_imagenet_weights_only_when_asked(tmp_path, monkeypatch, capsys):
    import torch.hub

    from dsg_viz.models import create_model

    # without --imagenet-weights: the CIFAR checkpoints from a file:// mirror, and no torchvision download at all
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    torch.save({"state_dict": create_model("resnet56_cifar10").state_dict()}, mirror / "resnet56-4bfd9763.th")
    rc = main(["fetch", "--data-root", str(tmp_path / "root"), "--models", "resnet56_cifar10", "--no-dataset",
               "--base-url", mirror.as_uri(), "--json"])
    assert rc == 0 and (tmp_path / "root" / "models" / "cifar10" / "resnet56-4bfd9763.th").is_file()
    assert not (tmp_path / "root" / "models" / "imagenet").exists()
    capsys.readouterr()

    # with it: torchvision's own download (patched here to hand back a state dict) into models/imagenet/NAME.pth
    calls = []

    def fake(url, model_dir=None, **kw):
        calls.append(url)
        return create_model("resnet18").state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    rc = main(["fetch", "--data-root", str(tmp_path / "root"), "--imagenet-weights", "resnet18", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dest = tmp_path / "root" / "models" / "imagenet" / "resnet18.pth"
    assert rc == 0 and out["imagenet_weights"] == [str(dest)] and dest.is_file()
    assert len(calls) == 1 and "resnet18" in calls[0]
    sd = torch.load(dest, weights_only=True)  # a plain state dict, the default checkpoint of resnet18
    assert "fc.weight" in sd


# ------------------------------------------------------------------------------------------------ every command


def test_eval_mobilenet_v2(inet, capsys):
    r = run(capsys, "eval", "--model", "mobilenet_v2", "--weights", "random", "--data-root", str(inet), "--limit", "2")
    assert r["n"] == 2


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_eval_and_generate(model, inet, tmp_path, capsys):
    common = ("--model", model, "--weights", "random", "--data-root", str(inet))
    r = run(capsys, "eval", *common, "--limit", "5", "--batch-size", "3")
    assert r["n"] == 5 and r["checkpoint"] is None
    r = run(capsys, "generate", *common, "--method", "dsg", "--num-samples", "4", "--steps", "2", "--batch-size", "2",
            "--out", str(tmp_path / "dsg.pt"))
    assert r["num_samples"] == 4
    from dsg_viz.generation import SampleSet

    s = SampleSet.load(tmp_path / "dsg.pt")
    assert s.images.shape == (4, 3, 224, 224) and all(len(b) == 2 for b in s.history["total"])
    r = run(capsys, "generate", *common, "--method", "real", "--num-samples", "3", "--out", str(tmp_path / "real.pt"))
    assert SampleSet.load(tmp_path / "real.pt").images.shape == (3, 3, 224, 224)


def test_compare_calib_resnet18(inet, tmp_path, capsys):
    r = run(capsys, "compare", "--model", "resnet18", "--weights", "random", "--data-root", str(inet),
            "--sources", "zeroq,real", "--bits", "W4A4", "--seeds", "1", "--num-samples", "4", "--steps", "2",
            "--batch-size", "2", "--eval-limit", "4", "--out", str(tmp_path / "cmp"))
    assert set(r["table"]["calib"]) == {"zeroq", "real"}
    res = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert res["fp"]["n"] == 4 and res["config"]["checkpoint"] is None


@pytest.mark.slow  # ~10 (brecq) units, two forward passes each at 224: ~1 min on 2 busy cores
@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v2"])
def test_compare_reconstruction(model, inet, tmp_path, capsys):
    r = run(capsys, "compare", "--model", model, "--weights", "random", "--data-root", str(inet),
            "--sources", "gaussian", "--bits", "W4A4", "--seeds", "1", "--num-samples", "2", "--batch-size", "2",
            "--eval-limit", "2", "--method", "brecq", "--recon-iters", "1", "--out", str(tmp_path / "rec"))
    assert r["table"]["brecq"]["gaussian"]["W4A4"]["n"] == 1


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_diagnose(model, inet, tmp_path, capsys):
    r = run(capsys, "diagnose", "--model", model, "--weights", "random", "--data-root", str(inet),
            "--sources", "gaussian,zeroq", "--real", "4", "--num-samples", "4", "--steps", "1", "--batch-size", "2",
            "--tsne-points", "12", "--perplexity", "2", "--max-values", "500", "--out", str(tmp_path / "diag"))
    assert set(r["scores"]) == {"real", "gaussian", "zeroq"}
    assert (tmp_path / "diag" / "report.html").is_file()


def test_collect_features_caps_values_per_layer():
    """Wide layers keep at most max_layer_values pooled values (channels × positions); narrow ones max_values."""
    from dsg_viz.diagnostics.metrics import collect_features
    from dsg_viz.models import create_model

    m = create_model("resnet18")
    x = torch.randn(2, 3, 64, 64)
    f = collect_features(m, x, batch_size=1, max_values=500, max_layer_values=64 * 300)
    for v in f.values:
        c = v.shape[0]
        assert v.shape[1] <= min(500, max(1, 64 * 300 // c))
    assert f.penultimate.shape == (2, 512)
    mb = create_model("mobilenet_v2")  # .features is a module: the penultimate is the input of the last Linear
    assert collect_features(mb, x[:1], max_values=10).penultimate.shape == (1, 1280)


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_qat_tiny(model, inet, tmp_path, capsys):
    r = run(capsys, "qat", "--model", model, "--weights", "random", "--data-root", str(inet), "--bits", "W4A4",
            "--preset", "cpu", "--epochs", "1", "--iters", "1", "--batch-size", "2", "--warmup-epochs", "0",
            "--val-limit", "2", "--eval-limit", "2", "--no-fp-reference", "--out", str(tmp_path / "qat"))
    assert r["complete"] and r["final"]["test"]["n"] == 2 and r["final"]["val_top1"] is not None
