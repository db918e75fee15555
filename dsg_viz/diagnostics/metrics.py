"""Homogenization metrics (dsg-method.md §F): pure functions of tensors/arrays, plus one feature collector.

Only :func:`collect_features` touches a model; everything else takes arrays (``torch.Tensor`` or ``numpy``)
and returns floats or ``numpy`` arrays. Stochastic functions take a ``seed``.

Levels (§A.3, §F):

* **distribution** (§F.1): pooled BN-input values of a channel vs the BN Gaussian N(mu, sigma^2) —
  :func:`wasserstein_to_gaussian` (exact W1, in units of sigma), :func:`kl_to_gaussian` (histogram, smoothed),
  :func:`pooled_stats` (exact batch mean/std from per-sample stats), :func:`batch_offset`, :func:`std_ratio`;
* **sample** (§F.2): :func:`dispersion` (D^mu, D^sigma), :func:`sda_matrix` (the L × N matrix of per-sample
  SDA losses);
* **inter-sample** (§F.3): :func:`cosine_matrix`, :func:`pearson_matrix`, :func:`mean_abs_offdiag`,
  :func:`eigenspectrum`, :func:`effective_rank`, :func:`gaussian_reference`;
* **embedding**: :func:`stack_sources` + :func:`embed` (t-SNE or PCA);
* **summary**: :func:`summarize` and :func:`summary_markdown`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .._modes import eval_mode
from ..bn import STAT_EPS, BNTargets, capture_bn

# ----------------------------------------------------------------------------------------------- features


@dataclass
class Features:
    """What the diagnostics need from one sample source, collected once (all tensors on CPU, detached).

    Attributes:
        layer_names: dotted names of the L BN layers, in forward order.
        mean, std: per layer, the per-sample BN-input statistics ``mu~_l(x_n)``, ``sigma~_l(x_n)``, [N, C_l]
            (spatial mean and ``sqrt(unbiased var + 1e-6)``, dsg-method.md §A.1).
        spatial: per layer, H_l * W_l (needed to pool per-sample statistics exactly).
        values: per layer, a uniform random subsample of the pooled raw BN inputs of each channel, [C_l, K_l]
            (K_l <= ``max_values``; the same (n, h, w) positions for every channel), or ``None`` if not kept.
        penultimate: penultimate features [N, D] (input of the classifier).
        logits: model outputs [N, K].
        images: the inputs [N, 3, H, W] in model input space (for pixel-space correlation and image grids).
        labels: the sample set's labels [N] or ``None``.
    """

    layer_names: tuple[str, ...]
    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    spatial: tuple[int, ...]
    values: list[torch.Tensor | None]
    penultimate: torch.Tensor
    logits: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.penultimate.shape[0])

    @property
    def num_layers(self) -> int:
        return len(self.layer_names)


MAX_LAYER_VALUES = 2 ** 21  # per layer, pooled BN-input values kept by collect_features (channels × positions)


def _last_linear(model: nn.Module) -> nn.Linear | None:
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return lin[-1] if lin else None


def collect_features(model: nn.Module, images: torch.Tensor, batch_size: int = 256, max_values: int = 20_000,
                     value_layers=None, labels: torch.Tensor | None = None, seed: int = 0,
                     progress: bool = False, max_layer_values: int = MAX_LAYER_VALUES) -> Features:
    """Return the :class:`Features` of ``images`` [N, 3, H, W] (model input space) under ``model``.

    BN inputs are read with :class:`dsg_viz.bn.capture_bn` forward pre-hooks (always removed) under
    ``torch.inference_mode``; the model's train/eval flag is restored. Penultimate features come from
    ``model.features(x)`` when the model has it, otherwise from a pre-hook on the last ``nn.Linear``.

    Args:
        batch_size: forward batch size (memory: all BN inputs of one batch are held at once).
        max_values: per layer and channel, at most this many pooled BN-input values are kept (a seeded uniform
            subsample over (n, h, w)); they feed the histogram-based scores (W1, KL) and histograms.
        max_layer_values: per layer, at most this many values in all (channels × positions): a layer with C
            channels keeps ``min(max_values, max_layer_values // C)`` positions, so memory stays bounded for wide
            ImageNet layers (2^21 floats = 8 MB per layer; CIFAR ResNets, C <= 64, are not affected).
        value_layers: indices (or names) of the layers whose values are kept; ``None`` = all layers.
        seed: seed of the value subsample.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    n = int(images.shape[0])
    if n < 1:
        raise ValueError("collect_features needs at least one image")
    device = next(model.parameters()).device
    modes = contextlib.ExitStack()
    modes.enter_context(eval_mode(model))  # each module's training flag restored in `finally`
    # a .features *method* gives the penultimate features (CifarResNet); torchvision's MobileNetV2 has a .features
    # *module* (the conv trunk, before pooling), so there the input of the last nn.Linear is read instead
    use_features = callable(getattr(model, "features", None)) and not isinstance(model.features, nn.Module)
    head = None if use_features else _last_linear(model)
    if not use_features and head is None:
        raise ValueError(f"{type(model).__name__} has neither a .features method nor an nn.Linear head; "
                         "cannot read penultimate features")
    from ..bn import bn_layers

    names = tuple(nm for nm, _ in bn_layers(model))
    L = len(names)
    if value_layers is None:
        keep_values = set(range(L))
    else:
        keep_values = {names.index(v) if isinstance(v, str) else int(v) % L for v in value_layers}
    g = torch.Generator().manual_seed(seed)
    means = [[] for _ in range(L)]
    stds = [[] for _ in range(L)]
    vals = [[] for _ in range(L)]
    spatial = [0] * L
    feats, logits, pen_store = [], [], []
    handle = None
    bar = None
    try:
        if head is not None:
            handle = head.register_forward_pre_hook(lambda _m, a: pen_store.append(a[0].detach().float().cpu()))
        starts = list(range(0, n, batch_size))
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(starts), desc="features", leave=False)
        with torch.inference_mode():
            for s in starts:
                xb = images[s:s + batch_size].to(device, torch.float32)
                b = xb.shape[0]
                with capture_bn(model, keep="both", detach=True) as cap:
                    if use_features:
                        feats.append(model.features(xb).float().cpu())
                    else:
                        out = model(xb)
                if use_features:  # outside the capture: the classifier pass must not overwrite the BN inputs
                    out = model(xb)
                logits.append(out.float().cpu())
                for li in range(L):
                    mu, sd = cap.stats[li]
                    means[li].append(mu.float().cpu())
                    stds[li].append(sd.float().cpu())
                    a = cap.inputs[li]
                    hw = int(a.shape[2] * a.shape[3])
                    spatial[li] = hw
                    if li in keep_values:
                        flat = a.float().transpose(0, 1).reshape(a.shape[1], -1)  # [C, b*hw]
                        kept = max(1, min(max_values, max_layer_values // max(1, a.shape[1])))
                        if n * hw <= kept:
                            vals[li].append(flat.cpu())
                        else:  # this batch's proportional quota; the quotas sum to exactly `kept`
                            k = (kept * (s + b)) // n - (kept * s) // n
                            idx = torch.randperm(b * hw, generator=g)[:k].to(flat.device)
                            vals[li].append(flat[:, idx].cpu())
                del cap
                if bar is not None:
                    bar.update(1)
    finally:
        if handle is not None:
            handle.remove()
        if bar is not None:
            bar.close()
        modes.close()
    pen = torch.cat(feats) if use_features else torch.cat(pen_store)
    return Features(
        layer_names=names,
        mean=[torch.cat(m) for m in means],
        std=[torch.cat(s) for s in stds],
        spatial=tuple(spatial),
        values=[torch.cat(v, 1) if v else None for v in vals],
        penultimate=pen.flatten(1),
        logits=torch.cat(logits),
        images=images.detach().float().cpu(),
        labels=None if labels is None else torch.as_tensor(labels).cpu(),
    )


# ------------------------------------------------------------------------------------------ distribution

def _t(x, dtype=torch.float64) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _np(x: torch.Tensor):
    x = x.detach().cpu().numpy()
    return x


def _channels(values, mu, sigma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    v = _t(values)
    squeeze = v.ndim == 1
    if squeeze:
        v = v[None]
    mu = _t(mu).reshape(-1, 1).expand(v.shape[0], 1)
    sigma = _t(sigma).reshape(-1, 1).expand(v.shape[0], 1)
    return v, mu, sigma, squeeze


def wasserstein_to_gaussian(values, mu, sigma):
    """Return the exact 1-Wasserstein distance between the empirical distribution of ``values`` and
    N(mu, sigma^2), **in units of sigma** (i.e. W1 of the standardized values to N(0, 1)).

    ``values``: [K] (one channel; ``mu``, ``sigma`` scalars) → float, or [C, K] (``mu``, ``sigma`` [C]) → [C].
    Closed form: ``W1 = sum_i ∫_{(i-1)/K}^{i/K} |z_(i) - Φ^{-1}(u)| du`` over the sorted standardized values
    ``z_(i)``, integrated exactly with the antiderivative ``z Φ(t) + φ(t)``. Values from the Gaussian itself
    give W1 ≈ 0 (O(K^-1/2)); a shift of ``d`` sigma gives ≈ ``|d|``.
    """
    v, mu, sigma, squeeze = _channels(values, mu, sigma)
    k = v.shape[1]
    if k == 0:
        raise ValueError("wasserstein_to_gaussian needs at least one value per channel")
    z = torch.sort((v - mu) / sigma, dim=1).values
    u = torch.arange(k + 1, dtype=torch.float64) / k
    t = torch.special.ndtri(u)  # [-inf, ..., inf]
    ua, ub, ta, tb = u[:-1], u[1:], t[:-1], t[1:]
    phi = lambda x: torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731 - φ(±inf) = 0
    zc = torch.minimum(torch.maximum(z, ta), tb)
    g_z = z * torch.special.ndtr(zc) + phi(zc)
    g_a = z * ua + phi(ta)
    g_b = z * ub + phi(tb)
    w = (2 * g_z - g_a - g_b).sum(1).clamp_min(0)
    return float(w[0]) if squeeze else _np(w)


def kl_to_gaussian(values, mu, sigma, bins: int = 50, bound: float = 5.0, eps: float = 1e-6):
    """Return KL(empirical ‖ N(mu, sigma^2)) from a histogram of the standardized values.

    ``bins`` equal bins on [-bound, bound] (in sigma units) plus one tail bin on each side; the Gaussian's bin
    probabilities are exact CDF differences. Both histograms get ``eps`` added to every bin and are
    renormalized (smoothing, so empty bins are finite). Shapes as :func:`wasserstein_to_gaussian`.
    Values from the Gaussian itself give ≈ (bins + 1) / (2 K).
    """
    v, mu, sigma, squeeze = _channels(values, mu, sigma)
    c, k = v.shape
    if k == 0:
        raise ValueError("kl_to_gaussian needs at least one value per channel")
    z = (v - mu) / sigma
    width = 2 * bound / bins
    idx = torch.floor((z + bound) / width).clamp(-1, bins).long() + 1  # 0 = left tail, bins + 1 = right tail
    counts = torch.zeros(c, bins + 2, dtype=torch.float64).scatter_add_(1, idx, torch.ones_like(z))
    p = counts / k
    edges = torch.linspace(-bound, bound, bins + 1, dtype=torch.float64)
    cdf = torch.special.ndtr(edges)
    q = torch.cat([cdf[:1], cdf[1:] - cdf[:-1], 1 - cdf[-1:]])[None]
    p = (p + eps) / (1 + eps * (bins + 2))
    q = (q + eps) / (1 + eps * (bins + 2))
    kl = (p * (p / q).log()).sum(1).clamp_min(0)
    return float(kl[0]) if squeeze else _np(kl)


def pooled_stats(mean, std, spatial: int, eps: float = STAT_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Return the batch-level ``(mean, std)`` [C] of the pooled values over (n, h, w), exactly, from per-sample
    stats ``mean``, ``std`` [N, C] as produced by :func:`dsg_viz.bn.per_sample_stats` (unbiased spatial
    variance + ``eps``) on ``spatial`` = H*W positions.

    Law of total variance: ``var = mean_n(biased var_n) + mean_n((mu_n - mu)^2)`` (the biased pooled variance,
    as BN computes in training).
    """
    m, s = _t(mean), _t(std)
    var_n = (s.square() - eps).clamp_min(0)
    if spatial > 1:
        var_n = var_n * (spatial - 1) / spatial
    mu = m.mean(0)
    var = var_n.mean(0) + (m - mu).square().mean(0)
    return _np(mu), _np(var.sqrt())


def batch_offset(mu_hat, mu, sigma) -> np.ndarray:
    """Return the normalized batch offset ``|mu_hat - mu| / sigma`` per channel (§F.1)."""
    return _np((_t(mu_hat) - _t(mu)).abs() / _t(sigma))


def std_ratio(sigma_hat, sigma) -> np.ndarray:
    """Return the std ratio ``sigma_hat / sigma`` per channel (§F.1); 1 = matches BN."""
    return _np(_t(sigma_hat) / _t(sigma))


# ------------------------------------------------------------------------------------------- sample level

def dispersion(mean, std, sigma) -> tuple[float, float]:
    """Return ``(D^mu, D^sigma)`` of one layer (§F.2): the std over samples of the per-sample means / stds
    ([N, C]), divided by the BN std ``sigma`` [C], averaged over channels. Identical samples give (0, 0)."""
    m, s, sg = _t(mean), _t(std), _t(sigma)
    if m.shape[0] < 2:
        return 0.0, 0.0
    return float((m.std(0) / sg).mean()), float((s.std(0) / sg).mean())


def relative(values, reference) -> np.ndarray:
    """Return ``values / reference`` element-wise (e.g. per-layer dispersion relative to real data)."""
    return _np(_t(values) / _t(reference))


def _margins_obj(margins):
    if margins is None or hasattr(margins, "delta"):
        return margins
    from ..objectives import Margins

    return Margins.from_dict(margins)


def sda_matrix(mean, std, targets: BNTargets, margins=None) -> np.ndarray:
    """Return M [L, N] with ``M[l, n] = l^SDA_l(x_n)`` (§B.1, §F.2 "LSE-specific view").

    ``mean``, ``std``: per layer [N, C_l] (e.g. ``Features.mean``, ``Features.std``); ``margins``: a
    :class:`dsg_viz.objectives.Margins`, its ``to_dict()`` (``SampleSet.margins``) or ``None`` (zero margins:
    the ZeroQ per-sample BN loss). Uses :meth:`dsg_viz.objectives.StepContext.sda_matrix`.
    """
    from ..objectives import StepContext

    stats = [(_t(m, torch.float32), _t(s, torch.float32)) for m, s in zip(mean, std)]
    ctx = StepContext(torch.empty(0), None, None, stats, targets)
    return _np(ctx.sda_matrix(_margins_obj(margins)).T.double())


# ------------------------------------------------------------------------------------------ inter-sample

def cosine_matrix(x) -> np.ndarray:
    """Return the cosine-similarity matrix [N, N] of the rows of ``x`` [N, ...] (flattened), float64."""
    f = _t(x).flatten(1)
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return _np(f @ f.T)


def pearson_matrix(x) -> np.ndarray:
    """Return the Pearson correlation matrix [N, N] between samples (rows of ``x`` [N, ...], flattened): the
    cosine similarity of the row-centred rows. A constant row correlates 0 with everything (and itself)."""
    f = _t(x).flatten(1)
    return cosine_matrix(f - f.mean(1, keepdim=True))


def mean_abs_offdiag(k) -> float:
    """Return the mean of ``|K_ij|`` over i != j of a square matrix ``k`` [N, N] (0 for N < 2)."""
    k = _t(k)
    n = k.shape[0]
    if n < 2:
        return 0.0
    return float((k.abs().sum() - k.diagonal().abs().sum()) / (n * (n - 1)))


def eigenspectrum(k) -> np.ndarray:
    """Return the eigenvalues of the symmetric matrix ``k`` [N, N] in descending order, clipped at 0."""
    k = _t(k)
    lam = torch.linalg.eigvalsh(0.5 * (k + k.T))
    return _np(lam.flip(0).clamp_min(0))


def effective_rank(k_or_eigvals) -> float:
    """Return the effective rank ``exp(H(λ / Σλ))`` (Shannon entropy, natural log; §F.3).

    Accepts eigenvalues [N] or a symmetric Gram matrix [N, N]. The maximum is N (a flat spectrum, e.g. the
    cosine Gram of N orthonormal rows); 1 means all samples are collinear.
    """
    a = _t(k_or_eigvals)
    lam = a.clamp_min(0) if a.ndim == 1 else _t(eigenspectrum(a))
    total = lam.sum()
    if total <= 0:
        return 0.0
    p = lam / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def gaussian_reference(shape, seed: int = 0) -> torch.Tensor:
    """Return i.i.d. N(0, 1) float32 noise of ``shape`` (the inter-sample reference of §F.3), seeded."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def correlation_scores(x) -> dict[str, float]:
    """Return ``{"offdiag_cos", "offdiag_pearson", "erank"}`` of the rows of ``x`` [N, ...]:
    mean |off-diagonal| of the cosine and Pearson matrices, and the effective rank of the cosine Gram."""
    k = cosine_matrix(x)
    return {"offdiag_cos": mean_abs_offdiag(k), "offdiag_pearson": mean_abs_offdiag(pearson_matrix(x)),
            "erank": effective_rank(k)}


# ------------------------------------------------------------------------------------------------ embedding

def stack_sources(arrays: dict, max_points: int | None = None, seed: int = 0):
    """Stack per-source arrays ``{name: [N_s, D]}`` for a shared embedding, subsampling each source evenly.

    Returns ``(X [M, D] float32, group [M] int (index into names), index [M] (row within its source), names)``.
    With ``max_points`` each source contributes at most ``max_points // len(arrays)`` rows (seeded choice).
    """
    names = list(arrays)
    if not names:
        raise ValueError("stack_sources needs at least one source")
    per = None if max_points is None else max(1, int(max_points) // len(names))
    rng = np.random.default_rng(seed)
    xs, groups, idxs = [], [], []
    for gi, name in enumerate(names):
        a = _t(arrays[name], torch.float32).flatten(1).numpy()
        idx = np.arange(len(a))
        if per is not None and len(a) > per:
            idx = np.sort(rng.choice(len(a), per, replace=False))
        xs.append(a[idx])
        groups.append(np.full(len(idx), gi))
        idxs.append(idx)
    return np.concatenate(xs), np.concatenate(groups), np.concatenate(idxs), names


def embed(x, method: str = "tsne", perplexity: float = 30.0, seed: int = 0, max_iter: int = 1000,
          threads: int | None = 1) -> np.ndarray:
    """Return a 2-D embedding [M, 2] of ``x`` [M, D]: ``"tsne"`` (sklearn, ``init="pca"``, ``random_state=
    seed``; perplexity clipped below M/3) or ``"pca"`` (exact SVD, fast). Same inputs and seed → same output.

    ``threads`` caps sklearn's OpenMP threads during t-SNE (``None`` = no cap). The default 1 is deliberate:
    t-SNE's per-iteration OpenMP barriers spin, and on a busy 2-core machine 2 threads ran 2-100× slower
    than 1 (72 points: 45 s vs 0.3 s; 2,000 points × 64: 40 s vs 17 s).
    """
    a = _t(x, torch.float32).flatten(1).numpy()
    if method == "pca":
        from sklearn.decomposition import PCA

        if a.shape[0] < 2:
            return np.zeros((a.shape[0], 2))
        p = PCA(n_components=min(2, a.shape[1]), svd_solver="full", random_state=seed).fit_transform(a)
        return np.pad(p, ((0, 0), (0, 2 - p.shape[1])))
    if method != "tsne":
        raise ValueError(f"unknown embedding method {method!r}; use 'tsne' or 'pca'")
    from sklearn.manifold import TSNE

    m = a.shape[0]
    if m < 4:
        return embed(a, "pca", seed=seed)
    perp = float(min(perplexity, (m - 1) / 3.0))
    ts = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, learning_rate="auto",
              max_iter=max_iter)
    if threads is None:
        return ts.fit_transform(a)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(int(threads), user_api="openmp"):
        return ts.fit_transform(a)


# -------------------------------------------------------------------------------------------------- summary

SCORES: dict[str, str] = {
    "w1": "W1 to BN Gaussian (σ units)",
    "kl": "KL(hist ‖ BN Gaussian)",
    "offset": "batch offset |μ̂−μ|/σ",
    "std_ratio": "batch std ratio σ̂/σ",
    "d_mu": "dispersion D^μ",
    "d_sigma": "dispersion D^σ",
    "rel_d_mu": "D^μ / D^μ(ref)",
    "rel_d_sigma": "D^σ / D^σ(ref)",
    "bn_loss": "per-sample BN loss Σ_l (ZeroQ)",
    "offdiag_cos_pixel": "mean |cos| off-diag, pixels",
    "offdiag_pearson_pixel": "mean |Pearson| off-diag, pixels",
    "offdiag_cos_feature": "mean |cos| off-diag, features",
    "offdiag_pearson_feature": "mean |Pearson| off-diag, features",
    "erank_pixel": "effective rank (cos), pixels",
    "erank_feature": "effective rank (cos), features",
}
LAYER_SCORES = ("w1", "kl", "offset", "std_ratio", "d_mu", "d_sigma", "rel_d_mu", "rel_d_sigma", "bn_loss")


def layer_scores(features: Features, targets: BNTargets, bins: int = 50) -> dict[str, np.ndarray]:
    """Return per-layer scores of one source, each [L]: ``w1``, ``kl`` (channel means; NaN where no values
    were kept), ``offset``, ``std_ratio`` (exact, from per-sample stats), ``d_mu``, ``d_sigma``, and ``bn_loss``
    (mean over samples of the ZeroQ per-sample layer loss)."""
    L = features.num_layers
    if L != len(targets):
        raise ValueError(f"features have {L} BN layers but targets {len(targets)}; same model?")
    out = {k: np.full(L, np.nan) for k in ("w1", "kl", "offset", "std_ratio", "d_mu", "d_sigma")}
    for li in range(L):
        mu, sg = targets.mean[li], targets.std[li]
        mh, sh = pooled_stats(features.mean[li], features.std[li], features.spatial[li])
        out["offset"][li] = batch_offset(mh, mu, sg).mean()
        out["std_ratio"][li] = std_ratio(sh, sg).mean()
        out["d_mu"][li], out["d_sigma"][li] = dispersion(features.mean[li], features.std[li], sg)
        v = features.values[li]
        if v is not None and v.shape[1] > 0:
            out["w1"][li] = wasserstein_to_gaussian(v, mu, sg).mean()
            out["kl"][li] = kl_to_gaussian(v, mu, sg, bins=bins).mean()
    out["bn_loss"] = sda_matrix(features.mean, features.std, targets, None).mean(1)
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if not math.isfinite(x) else x


def _nanmean(a) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return _f(a.mean()) if a.size else None


def summarize(features_by_source: dict[str, Features], targets: BNTargets, reference: str = "real",
              seed: int = 0) -> dict:
    """Return the homogenization summary of several sources (JSON-serializable).

    Keys: ``sources`` (names, reference first if present), ``reference`` (name or ``None`` if absent), ``n``
    (samples per source; the minimum if they differ), ``layers`` (BN names), ``scores`` ``{source: {score:
    value}}`` (layer-averaged; see :data:`SCORES`; ``None`` where undefined), ``per_layer`` ``{source: {score:
    [L]}}``, and ``noise_reference`` (inter-sample scores of seeded N(0, 1) noise shaped like the pixels and
    like the features). Relative dispersion is the layer mean of ``D_l / D_l(reference)``.
    """
    if not features_by_source:
        raise ValueError("summarize needs at least one source")
    names = list(features_by_source)
    ref = reference if reference in features_by_source else None
    if ref is not None:
        names = [ref] + [n for n in names if n != ref]
    per_layer = {s: layer_scores(features_by_source[s], targets) for s in names}
    if ref is not None:
        for s in names:
            per_layer[s]["rel_d_mu"] = per_layer[s]["d_mu"] / per_layer[ref]["d_mu"]
            per_layer[s]["rel_d_sigma"] = per_layer[s]["d_sigma"] / per_layer[ref]["d_sigma"]
    scores = {}
    for s in names:
        f = features_by_source[s]
        sc = {k: (_nanmean(per_layer[s][k]) if k in per_layer[s] else None) for k in LAYER_SCORES}
        sc["bn_loss"] = _f(per_layer[s]["bn_loss"].sum())  # Σ over layers of the sample-mean loss
        px = correlation_scores(f.images)
        ft = correlation_scores(f.penultimate)
        sc.update({"offdiag_cos_pixel": px["offdiag_cos"], "offdiag_pearson_pixel": px["offdiag_pearson"],
                   "offdiag_cos_feature": ft["offdiag_cos"], "offdiag_pearson_feature": ft["offdiag_pearson"],
                   "erank_pixel": px["erank"], "erank_feature": ft["erank"]})
        scores[s] = {k: (None if v is None else _f(v)) for k, v in sc.items()}
    first = features_by_source[names[0]]
    npx = correlation_scores(gaussian_reference(first.images.shape, seed))
    nft = correlation_scores(gaussian_reference(first.penultimate.shape, seed + 1))
    noise = {"offdiag_cos_pixel": npx["offdiag_cos"], "offdiag_pearson_pixel": npx["offdiag_pearson"],
             "offdiag_cos_feature": nft["offdiag_cos"], "offdiag_pearson_feature": nft["offdiag_pearson"],
             "erank_pixel": npx["erank"], "erank_feature": nft["erank"]}
    return {
        "sources": names,
        "reference": ref,
        "n": min(len(features_by_source[s]) for s in names),
        "layers": list(targets.names),
        "scores": scores,
        "per_layer": {s: {k: [_f(v) for v in np.asarray(a, dtype=float)] for k, a in per_layer[s].items()}
                      for s in names},
        "noise_reference": noise,
        "seed": seed,
    }


def accuracy_label(col: str, acc: dict) -> str:
    """Return the row label of an accuracy column ``method/bits`` of ``summary["accuracy"]``, e.g.
    ``"top-1 calib W4A4 (test, %)"``."""
    return f"top-1 {col.replace('/', ' ')} ({acc.get('split', 'test')}, %)"


def accuracy_cell(v: dict | None) -> str:
    """Return ``"mean ± std"`` (2 decimals) of one accuracy entry ``{"mean", "std", "n"}`` (the mean alone for one
    seed), or ``"–"``."""
    if not v:
        return "–"
    return f"{v['mean']:.2f} ± {v['std']:.2f}" if v["n"] > 1 else f"{v['mean']:.2f}"


def summary_markdown(summary: dict, digits: int = 4) -> str:
    """Return the summary as a Markdown table: one row per score, one column per source with the reference
    (real) first, plus an N(0, 1)-noise column for the inter-sample scores; with ``summary["accuracy"]``
    (``diagnose(..., accuracy=...)``) also one top-1 row per quantization method and bit width."""
    names = summary["sources"]
    ref = summary.get("reference")
    noise = summary.get("noise_reference", {})
    head = [f"{n} (ref)" if n == ref else n for n in names] + ["N(0,1) noise"]
    lines = ["| score | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]

    def fmt(v):
        return "–" if v is None else f"{v:.{digits}g}"

    for key, label in SCORES.items():
        row = [fmt(summary["scores"][n].get(key)) for n in names] + [fmt(noise.get(key))]
        lines.append(f"| {label.replace('|', chr(92) + '|')} | " + " | ".join(row) + " |")
    acc = summary.get("accuracy")
    for col in (acc or {}).get("columns", []):
        row = [accuracy_cell((acc["values"].get(n) or {}).get(col)) for n in names] + ["–"]
        lines.append(f"| {accuracy_label(col, acc)} | " + " | ".join(row) + " |")
    note = (f"\n{summary['n']} samples per source; layer-averaged over {len(summary['layers'])} BN layers "
            "(bn_loss: summed). W1/KL/offset/ratio: vs the BN Gaussian N(μ, σ²); D: std over samples of "
            "per-sample stats / σ.")
    if ref is None:
        note += " No reference source: relative dispersion undefined."
    if acc:
        st = acc.get("settings", {})
        note += (f" Top-1 rows: mean ± std over seeds from {acc['file']} ({acc.get('model')}, {acc.get('n_eval')} "
                 f"{acc['split']} images, FP {acc.get('fp_top1')}), measured on that run's own sets "
                 f"({st.get('num_samples')} samples, {st.get('steps') or 'preset'} steps, {st.get('seeds')} seed(s)), "
                 "not on the sets diagnosed here.")
    return "\n".join(lines) + "\n" + note + "\n"
