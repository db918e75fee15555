"""The speed baseline: a straightforward re-implementation of the released DSG-PTQ generation loop.

Written from ``dsg-method.md`` §C.1 the way the released ``distill_data.py`` is written, on purpose *without*
the optimizations of :func:`dsg_viz.generate`:

* forward hooks on the ``Conv2d`` layers store their outputs (ZeroQ's ``output_hook``; on the CIFAR ResNets and
  ``tiny_bn`` every conv feeds exactly one BN, so these are the BN inputs), paired with the BN layers by index;
* a Python loop over the layers computes each layer's statistics with separate ``mean`` and ``var`` calls (the
  variance recomputes the mean), the input statistics again for the input term, and builds each layer's margin
  tensor with ``np.load('m.npy')`` / ``np.load('n.npy')`` **inside the iteration loop**;
* LSE multiplies row ``cnt`` of layer ``cnt``'s hinge matrix by 2 before squaring (``onehot``, ``layer_num=20``);
* SCI is the GDPP loss on pixels against fresh Gaussian noise with an unsorted general eigendecomposition,
  detached (no gradient), divided by L; CE is added twice; TV_2 and the L2 prior act on the jittered copy;
* ``loss.backward()`` with the model's parameters still requiring grad (weight gradients are computed and then
  zeroed by ``model.zero_grad()``), Adam lr 0.9, ``ReduceLROnPlateau(patience=260, min_lr=1e-4)``.

The loss is the one of our ``dsg-official`` preset (same terms and weights; the SCI value differs because the
released eigenpairs are unsorted, and the jitter changes TV at the wrap-around seam only).

    python benchmarks/dsg_reference_loop.py --steps 30      # one timed batch of the paper's 40 on ResNet-20
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6
CLOCK = time.process_time  # phase timers: process CPU seconds (1 thread), less sensitive to load than wall


class OutputHook:
    """ZeroQ's ``output_hook``: keeps the last output of the module it is registered on."""

    def __init__(self):
        self.outputs = None

    def hook(self, module, inputs, output):
        self.outputs = output

    def clear(self):
        self.outputs = None


def write_margin_files(delta: list, gamma: list, folder: str | os.PathLike) -> Path:
    """Write per-layer margins (scalars or length-C_l arrays) as ragged object arrays ``m.npy`` and ``n.npy``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, values in (("m.npy", delta), ("n.npy", gamma)):
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            arr[i] = np.asarray(torch.as_tensor(v).detach().cpu().numpy(), dtype=np.float64)
        np.save(folder / name, arr, allow_pickle=True)
    return folder


def compute_sci(images: torch.Tensor, gauss_img: torch.Tensor) -> torch.Tensor:
    """The released ``compute_sci``: GDPP on pixels vs Gaussian noise; eigenpairs detached (no gradient)."""

    def compute_diversity(phi):
        phi = F.normalize(phi, p=2, dim=1)
        s_b = torch.mm(phi, phi.t())
        vals, vecs = torch.linalg.eig(s_b.detach())  # torch.eig is gone; general, unsorted, real parts kept
        return vals.real.detach(), vecs.real.detach()

    def normalize_min_max(v):
        return (v - v.min()) / (v.max() - v.min())

    fake_vals, fake_vecs = compute_diversity(images.view(images.shape[0], -1))
    real_vals, real_vecs = compute_diversity(gauss_img.view(gauss_img.shape[0], -1))
    magnitude_loss = 0.0001 * F.mse_loss(target=real_vals, input=fake_vals)
    structure_loss = -torch.sum(torch.mul(fake_vecs, real_vecs), 0)
    weighted_structure_loss = torch.sum(torch.mul(normalize_min_max(real_vals), structure_loss))
    return magnitude_loss.abs() + weighted_structure_loss.abs()


def reference_loss(model: nn.Module, hooks: list[OutputHook], bns: list[nn.BatchNorm2d], x: torch.Tensor,
                   labels: torch.Tensor, margin_dir: str | os.PathLike, onehot: bool = True, layer_num: int = 20,
                   jitter: int | None = 0, sci: bool = True, timers: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Return ``(total_loss, {term: float})`` of one released-style iteration (forward included).

    ``jitter``: the roll offset of the image priors (``None`` draws one in {-30..29} like the released code).
    ``timers`` (optional dict) accumulates CPU seconds per phase: forward, margins_io, statistics+loss, sci.
    """
    t = CLOCK()
    output = model(x)
    t1 = CLOCK()
    m = np.load(os.path.join(margin_dir, "m.npy"), allow_pickle=True)  # re-read every iteration, as released
    n = np.load(os.path.join(margin_dir, "n.npy"), allow_pickle=True)
    t2 = CLOCK()
    bsz = x.shape[0]
    bn_loss = 0.0
    for cnt, (bn, hook) in enumerate(zip(bns, hooks)):
        out = hook.outputs
        c = out.shape[1]
        tmp_mean = torch.mean(out.view(bsz, c, -1), dim=2)
        tmp_std = torch.sqrt(torch.var(out.view(bsz, c, -1), dim=2) + EPS)
        bn_mean = bn.running_mean.detach()
        bn_std = torch.sqrt(bn.running_var.detach() + EPS)
        m_c = torch.from_numpy(np.abs(m[cnt]) * np.ones(c)).float()
        n_c = torch.from_numpy(np.abs(n[cnt]) * np.ones(c)).float()
        d_mean = F.relu(torch.abs(tmp_mean - bn_mean) - m_c)
        d_std = F.relu(torch.abs(tmp_std - bn_std) - n_c)
        if onehot and cnt < min(bsz, layer_num):
            w = torch.ones(bsz, 1)
            w[cnt] = 2.0  # ×2 before squaring: effective weight 4
            d_mean = d_mean * w
            d_std = d_std * w
        bn_loss = bn_loss + (torch.norm(d_mean) ** 2 + torch.norm(d_std) ** 2) / bsz
    # input statistics, margin 0 (recomputed from the images)
    in_mean = torch.mean(x.view(bsz, 3, -1), dim=2)
    in_std = torch.sqrt(torch.var(x.view(bsz, 3, -1), dim=2) + EPS)
    in_loss = (torch.norm(in_mean) ** 2 + torch.norm(in_std - 1) ** 2) / bsz
    ce = F.cross_entropy(output, labels)
    off = random.randint(-30, 29) if jitter is None else jitter
    x_jit = torch.roll(x, shifts=(off, off), dims=(2, 3))
    diff1 = x_jit[:, :, :, :-1] - x_jit[:, :, :, 1:]
    diff2 = x_jit[:, :, :-1, :] - x_jit[:, :, 1:, :]
    diff3 = x_jit[:, :, 1:, :-1] - x_jit[:, :, :-1, 1:]
    diff4 = x_jit[:, :, :-1, :-1] - x_jit[:, :, 1:, 1:]
    tv = torch.norm(diff1) + torch.norm(diff2) + torch.norm(diff3) + torch.norm(diff4)
    l2 = torch.norm(x_jit.view(bsz, -1), dim=1).mean()
    t3 = CLOCK()
    sci_v = compute_sci(x, torch.randn_like(x)) / len(m) if sci else torch.zeros(())
    t4 = CLOCK()
    total = bn_loss + in_loss + sci_v + ce + ce + 0.01 * tv + 0.01 * l2  # CE added twice, as released
    if timers is not None:
        for k, v in (("forward", t1 - t), ("margins_io", t2 - t1), ("statistics+loss", t3 - t2), ("sci", t4 - t3)):
            timers[k] = timers.get(k, 0.0) + v
    terms = {"sda+lse": float(bn_loss.detach()), "input": float(in_loss.detach()), "sci": float(sci_v),
             "ce": 2 * float(ce.detach()),
             "tv": 0.01 * float(tv.detach()), "l2": 0.01 * float(l2.detach())}
    return total, terms


def register_hooks(model: nn.Module) -> tuple[list[OutputHook], list[nn.BatchNorm2d], list]:
    """Register ZeroQ-style output hooks on every Conv2d; return ``(hooks, bn_layers, handles)``."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(bns):
        raise ValueError(f"conv/BN pairing needs as many convs as BNs ({len(convs)} vs {len(bns)})")
    hooks, handles = [], []
    for conv in convs:
        h = OutputHook()
        handles.append(conv.register_forward_hook(h.hook))
        hooks.append(h)
    return hooks, bns, handles


def reference_generate(model: nn.Module, margin_dir: str | os.PathLike, batch_size: int = 40, steps: int = 500,
                       lr: float = 0.9, patience: int = 260, seed: int = 666, num_classes: int = 10,
                       input_size=(3, 32, 32), timers: dict | None = None) -> tuple[torch.Tensor, list[float]]:
    """Run the released loop on one batch; return ``(images [N, 3, H, W], total loss per step)``.

    ``timers`` (optional) accumulates per-phase CPU seconds: forward, margins_io, statistics+loss, sci,
    backward, optimizer.
    """
    torch.manual_seed(seed)
    random.seed(seed)
    model.eval()
    hooks, bns, handles = register_hooks(model)
    try:
        gaussian_data = torch.rand(batch_size, *input_size)  # GaussDataset: torch.rand, i.e. U[0, 1)
        gaussian_data.requires_grad = True
        labels = torch.randint(0, num_classes, (batch_size,))
        optimizer = torch.optim.Adam([gaussian_data], lr=lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, min_lr=1e-4, patience=patience)
        losses = []
        for _ in range(steps):
            t0 = CLOCK()
            model.zero_grad()
            optimizer.zero_grad()
            t1 = CLOCK()
            total, _ = reference_loss(model, hooks, bns, gaussian_data, labels, margin_dir, jitter=None,
                                      timers=timers)
            t2 = CLOCK()
            total.backward()
            t3 = CLOCK()
            optimizer.step()
            scheduler.step(total.item())
            losses.append(total.item())
            t4 = CLOCK()
            if timers is not None:
                for k, v in (("optimizer", (t1 - t0) + (t4 - t3)), ("backward", t3 - t2)):
                    timers[k] = timers.get(k, 0.0) + v
        return gaussian_data.detach(), losses
    finally:
        for h in handles:
            h.remove()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20_cifar10")
    p.add_argument("--checkpoint", default=os.path.join(os.environ.get("DSG_VIZ_DATA_ROOT", "../shared"),
                                                        "models/cifar10/resnet20_cifar10_jpeg.pt"))
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from dsg_viz import create_model
    from dsg_viz.margins import compute_margins

    model = create_model(a.model, a.checkpoint if os.path.isfile(a.checkpoint) else None)
    mg = compute_margins(model, a.batch_size, seed=0)
    with tempfile.TemporaryDirectory() as d:
        write_margin_files([t[0].item() for t in mg.delta], [t[0].item() for t in mg.gamma], d)
        timers: dict = {}
        t = time.perf_counter()
        _, losses = reference_generate(model, d, a.batch_size, a.steps, num_classes=model.spec.num_classes,
                                       input_size=model.spec.input_size, timers=timers)
        dt = time.perf_counter() - t
    print(f"{a.steps} steps, batch {a.batch_size}: {dt:.2f} s ({dt / a.steps:.3f} s/step); "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print({k: round(v / a.steps, 4) for k, v in timers.items()})


if __name__ == "__main__":
    main()
