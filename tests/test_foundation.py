"""Foundation: registry, checkpoints, BN capture, data root rule, evaluation, fetch and CLI."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsg_viz import bn_layers, capture_bn, create_model, get_spec, list_models
from dsg_viz.bn import bn_targets, has_hooks, per_sample_stats
from dsg_viz.cli import main
from dsg_viz.data import load_split, resolve_data_root, train_val_split, validation_indices
from dsg_viz.errors import CheckpointError, DataError, ModelError
from dsg_viz.evaluate import evaluate
from dsg_viz.models import ModelSpec, read_state_dict, register_model

from .conftest import JPEG_CKPT, SHARED


@pytest.mark.parametrize("name", list_models())
def test_registry_build_forward_bn_count(name):
    spec = get_spec(name)
    model = create_model(name)
    assert model.spec is spec and not model.training
    assert len(bn_layers(model)) == spec.num_bn
    if spec.input_size[1] <= 32:  # the ImageNet models are built and counted, but forwarded only at small size
        out = model(torch.randn(2, *spec.input_size))
    else:
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape[-1] == spec.num_classes


def test_duplicate_name_is_error():
    with pytest.raises(ModelError, match="already registered"):
        register_model(get_spec("tiny_bn"), lambda: None)


def test_unknown_model_is_error():
    with pytest.raises(ModelError, match="unknown model"):
        create_model("resnet9000")


@pytest.mark.parametrize("fname,name", [("resnet20_cifar10_jpeg.pt", "resnet20_cifar10"),
                                        ("resnet20-12fca82f.th", "resnet20_cifar10"),
                                        ("resnet32-d509ac18.th", "resnet32_cifar10"),
                                        ("resnet44-014dd654.th", "resnet44_cifar10")])
def test_loader_reads_both_shared_formats(data_root, fname, name):
    path = data_root / "models" / "cifar10" / fname
    sd = read_state_dict(path)
    assert not any(k.startswith("module.") for k in sd)
    m = create_model(name, str(path))
    assert torch.equal(m.linear.weight, sd["linear.weight"])


def test_wrong_architecture_is_clear_error(data_root):
    with pytest.raises(CheckpointError, match="missing keys.*pick the --model"):
        create_model("resnet32_cifar10", str(data_root / "models/cifar10/resnet20-12fca82f.th"))
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("resnet20_cifar10", "/nonexistent.th")


def test_bn_capture_removes_hooks_even_on_error(tiny):
    x = torch.randn(4, 3, 16, 16)
    with capture_bn(tiny, keep="both") as cap:
        tiny(x)
        assert has_hooks(tiny)
    assert not has_hooks(tiny)
    mu, sd = cap.stats[0]
    assert mu.shape == (4, 8) and sd.shape == (4, 8)
    assert torch.allclose(cap.inputs[0].mean((2, 3)), mu, atol=1e-6)
    with pytest.raises(RuntimeError):
        with capture_bn(tiny):
            raise RuntimeError("boom")
    assert not has_hooks(tiny)


def test_per_sample_stats_estimator():
    x = torch.randn(3, 5, 4, 4)
    mu, sd = per_sample_stats(x)
    assert torch.allclose(sd, (x.flatten(2).var(2, unbiased=True) + 1e-6).sqrt())
    assert torch.allclose(mu, x.flatten(2).mean(2))


def test_bn_required():
    with pytest.raises(ModelError, match="no BatchNorm"):
        bn_layers(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))


def test_bn_targets_read_running_stats(tiny):
    t = bn_targets(tiny)
    assert len(t) == 3 and torch.allclose(t.mean[0], tiny.bn1.running_mean)
    assert torch.allclose(t.std[1], (tiny.bn2.running_var + 1e-6).sqrt())


def test_data_root_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("DSG_VIZ_DATA_ROOT", str(tmp_path))
    assert resolve_data_root("flag") == Path("flag")  # the flag beats the environment variable
    assert resolve_data_root("~/x") == Path.home() / "x"
    assert resolve_data_root(None) == tmp_path
    monkeypatch.delenv("DSG_VIZ_DATA_ROOT")
    assert str(resolve_data_root(None)) == "data"


def test_missing_split_is_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found.*--data-root"):
        load_split("test", tmp_path)


def test_validation_subset_is_fixed_and_balanced():
    labels = torch.arange(10).repeat_interleave(600)
    idx = validation_indices(labels, per_class=50)
    assert len(idx) == 500 and torch.equal(labels[idx].bincount(), torch.full((10,), 50))
    assert torch.equal(idx, validation_indices(labels, per_class=50))


def test_train_val_disjoint(data_root):
    train, val = train_val_split(data_root)
    assert len(train) == 45000 and len(val) == 5000
    assert torch.equal(val.labels.bincount(), torch.full((10,), 500))


def test_evaluate_real_subset(resnet20, test_subset):
    r = evaluate(resnet20, test_subset)
    assert r["n"] == 300 and 80 < r["top1"] <= 100 and r["top5"] >= r["top1"]


def test_cli_eval_json(capsys, data_root):
    rc = main(["eval", "--checkpoint", str(JPEG_CKPT), "--data-root", str(data_root), "--limit", "200", "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert obj["n"] == 200 and {"top1", "top5"} <= obj.keys()


@pytest.mark.parametrize("argv,msg", [
    (["eval", "--model", "nope"], "unknown model"),
    (["eval", "--data-root", "/nonexistent-root"], "does not exist"),
    (["eval", "--model", "resnet32_cifar10", "--checkpoint", str(JPEG_CKPT)], "does not fit model"),
])
def test_cli_bad_input_exit_2_one_line(argv, msg):
    p = subprocess.run([sys.executable, "-m", "dsg_viz.cli", *argv], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and msg in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_fetch_from_file_url(tmp_path, data_root):
    from dsg_viz.fetch import download_url, fetch

    mirror = data_root / "models" / "cifar10"
    out = fetch(tmp_path / "root", models=["resnet20_cifar10"], dataset=False, base_url=mirror.as_uri())
    dest = tmp_path / "root" / "models" / "cifar10" / "resnet20-12fca82f.th"
    assert out["checkpoints"] == [str(dest)] and dest.is_file()
    assert hashlib.sha256(dest.read_bytes()).hexdigest().startswith("12fca82f")
    with pytest.raises(DataError, match="SHA-256"):
        download_url((mirror / "resnet32-d509ac18.th").as_uri(), tmp_path / "x.th", sha256="0" * 64)
    assert not list(tmp_path.glob("x.th*"))  # nothing half-written
    with pytest.raises(DataError, match="cannot download"):
        download_url((tmp_path / "missing").as_uri(), tmp_path / "y.th")
