"""SDA slack margins computed from the model (dsg-method.md §B.1 "How the paper sets the margins", §G item 1).

The paper's recipe: forward one batch of N(0, 1) noise, take absolute deviations of its feature statistics from
the BN running statistics, and set each layer's margin to their ε-quantile (ε = 0.9). The axis (per layer / per
channel), the statistic source (per-sample / batch) and a scale factor are options; margins can also be computed
from real images (a reference, not data-free) or loaded from a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import _io
from ._modes import eval_mode
from .bn import STAT_EPS, bn_targets, capture_bn, per_sample_stats
from .errors import ConfigError, DataError
from .objectives import Margins

SOURCES = ("per_sample", "batch")
AXES = ("layer", "channel")


@torch.no_grad()
def margins_from_inputs(model: nn.Module, x: torch.Tensor, quantile: float = 0.9, source: str = "per_sample",
                        axis: str = "layer", scale: float = 1.0) -> Margins:
    """Return margins from the statistic deviations of inputs ``x`` [N, 3, H, W] (model input space).

    ``source="per_sample"``: deviations of per-sample stats, [N, C_l] per layer; ``"batch"``: of the batch stats,
    [C_l]. ``axis="layer"``: one ε-quantile per layer over all (sample ×) channel deviations, broadcast to C_l;
    ``"channel"``: one ε-quantile per channel (over samples; with ``"batch"`` the deviation itself).
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown margin source {source!r}; use one of {SOURCES}")
    if axis not in AXES:
        raise ConfigError(f"unknown margin axis {axis!r}; use one of {AXES}")
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"margin quantile must be in (0, 1], got {quantile}")
    targets = bn_targets(model)
    delta, gamma = [], []
    for a, mu_t, sd_t in zip(bn_inputs_eval(model, x), targets.mean, targets.std):
        if source == "per_sample":
            mu, sd = per_sample_stats(a)  # [N, C]
        else:
            var, mu = torch.var_mean(a.float(), dim=(0, 2, 3), correction=0)
            mu, sd = mu[None], torch.sqrt(var + STAT_EPS)[None]  # [1, C]
        dm, ds = (mu - mu_t).abs(), (sd - sd_t).abs()
        if axis == "layer":
            qd = torch.quantile(dm.flatten(), quantile).expand(mu_t.shape)
            qg = torch.quantile(ds.flatten(), quantile).expand(sd_t.shape)
        else:
            qd, qg = torch.quantile(dm, quantile, dim=0), torch.quantile(ds, quantile, dim=0)
        delta.append((scale * qd).clone().float())
        gamma.append((scale * qg).clone().float())
    return Margins(delta, gamma, {"quantile": quantile, "source": source, "axis": axis, "scale": scale,
                                  "n": int(x.shape[0])})


def bn_inputs_eval(model, x):
    """Return the detached inputs of every BN layer (list of [N, C_l, H_l, W_l]) for ``x`` in eval mode; the
    model's training flag is restored and no hook outlives the call."""
    with eval_mode(model), capture_bn(model, keep="inputs", detach=True) as cap:
        model(x)
    return cap.inputs


def compute_margins(model: nn.Module, batch_size: int = 64, quantile: float = 0.9, source: str = "per_sample",
                    axis: str = "layer", scale: float = 1.0, seed: int = 0) -> Margins:
    """Return margins from one forward pass of N(0, 1) noise of shape [batch_size, *spec.input_size] (paper)."""
    shape = tuple(model.spec.input_size) if hasattr(model, "spec") else None
    if shape is None:
        raise ConfigError("model has no .spec; build it with dsg_viz.create_model")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x = torch.randn((batch_size, *shape), generator=g).to(device)
    m = margins_from_inputs(model, x, quantile, source, axis, scale)
    m.meta.update({"from": "noise", "seed": seed})
    return m


def load_margins(path: str | Path, model: nn.Module, scale: float = 1.0) -> Margins:
    """Load user-supplied margins and broadcast them to each layer's channels.

    Accepts a ``.pt`` dict ``{"delta": [...], "gamma": [...]}`` (e.g. saved by dsg_viz), an ``.npz`` with
    arrays ``m`` and ``n``, or a folder with the official ``m.npy`` / ``n.npy`` (one entry per BN layer, a scalar
    or a length-C_l array; the sign is ignored as in the official PTQ code).

    Nothing is unpickled beyond tensors and NumPy arrays (``torch.load(weights_only=True)``, a NumPy-only unpickler
    for ragged ``.npy`` object arrays): a file holding anything else is refused, since loading it could run code.
    """
    path = Path(path)
    targets = bn_targets(model)
    if path.is_dir():
        if not (path / "m.npy").is_file() or not (path / "n.npy").is_file():
            raise DataError(f"margins folder {path} needs m.npy and n.npy (the official DSG format)")
        m = _io.load_npy(path / "m.npy", "margins file")
        n = _io.load_npy(path / "n.npy", "margins file")
    elif path.suffix == ".npz":
        d = _io.load_npz(path, "margins file")
        if "m" not in d or "n" not in d:
            raise DataError(f"margins file {path} needs arrays 'm' and 'n'")
        m, n = d["m"], d["n"]
    elif path.is_file():
        d = _io.load(path, "margins file",
                     "pass a .pt dict with 'delta' and 'gamma', a .npz, or a folder with m.npy/n.npy")
        if isinstance(d, dict) and "margins" in d and isinstance(d["margins"], dict):
            d = d["margins"]  # a saved sample set
        if not isinstance(d, dict) or "delta" not in d or "gamma" not in d:
            raise DataError(f"margins file {path} must hold a dict with 'delta' and 'gamma'")
        m, n = d["delta"], d["gamma"]
    else:
        raise DataError(f"margins file {path} does not exist; pass a .pt, .npz, or a folder with m.npy/n.npy")
    try:
        m, n = list(m), list(n)
    except TypeError:
        raise DataError(f"margins file {path}: 'delta'/'gamma' (m/n) must be one entry per BN layer") from None
    if len(m) != len(targets) or len(n) != len(targets):
        raise DataError(f"margins file {path} has {len(m)}/{len(n)} layers but the model has {len(targets)} BN layers")
    delta, gamma = [], []
    for mi, ni, t in zip(m, n, targets.mean):
        try:
            di = torch.as_tensor(np.asarray(mi, dtype=np.float32)).abs().flatten()
            gi = torch.as_tensor(np.asarray(ni, dtype=np.float32)).abs().flatten()
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"margins file {path}: each layer's margin must be a number or an array of "
                            "numbers") from None
        if not (torch.isfinite(di).all() and torch.isfinite(gi).all()):
            raise DataError(f"margins file {path} holds non-finite values")
        for v in (di, gi):
            if v.numel() not in (1, t.numel()):
                raise DataError(f"margins file {path}: a layer has {v.numel()} values for {t.numel()} channels")
        delta.append(scale * di.expand(t.shape).clone())
        gamma.append(scale * gi.expand(t.shape).clone())
    return Margins(delta, gamma, {"from": str(path), "scale": scale})
