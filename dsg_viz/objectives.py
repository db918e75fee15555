"""Objectives for sample generation: small named terms that compose with ``+`` and scalar ``*``.

Every term is called on a :class:`StepContext` (the images, logits, labels and per-sample BN statistics of one
optimization step) and returns a scalar tensor. An :class:`Objective` is a weighted sum of terms; calling it
returns ``(total, {name: value})`` so every term's curve can be logged.

Notation follows ``dsg-method.md``: L BN layers, batch of N samples, per-sample BN-input statistics
``mu~_l(x_n)``, ``sigma~_l(x_n)`` of shape [N, C_l], BN running targets ``mu_l``, ``sigma_l`` of shape [C_l].

Terms (and the equation each implements):

* :class:`BNAlignment` — ZeroQ per-sample BN loss, dsg-method.md §A.1 (L_BNS without the input term).
* :class:`SlackBNAlignment` — SDA, §B.1: ``||[|mu~-mu| - delta]_+||^2 + ||[|sigma~-sigma| - gamma]_+||^2``.
* :class:`LayerwiseEnhancement` — LSE, §B.2: the extra ``(w - 1) * M[a(j), j]`` of ``1/N 1^T (X_LSE ⊙ M) 1``.
* :class:`CorrelationInhibition` — SCI, §B.3 (``intended`` eigh/GDPP form, ``offdiag`` penalty, ``faithful``).
* :class:`InputStats` — the input-statistics term of §A.1.
* :class:`CrossEntropy`, :class:`TotalVariation` (TV_2 of §C.1), :class:`ImageL2` — code-level priors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .bn import BNTargets, per_sample_stats
from .errors import ConfigError


@dataclass
class Margins:
    """SDA slack margins per BN layer, expanded per channel: ``delta[l]``, ``gamma[l]`` of shape [C_l]."""

    delta: list[torch.Tensor]
    gamma: list[torch.Tensor]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"delta": [d.clone() for d in self.delta], "gamma": [g.clone() for g in self.gamma],
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict) -> "Margins":
        return cls([torch.as_tensor(t).float() for t in d["delta"]], [torch.as_tensor(t).float() for t in d["gamma"]],
                   dict(d.get("meta", {})))

    def layer_means(self) -> tuple[list[float], list[float]]:
        """Return the per-layer mean of ``delta`` and of ``gamma``."""
        return [d.mean().item() for d in self.delta], [g.mean().item() for g in self.gamma]


class StepContext:
    """Everything a term may need at one step; shared intermediate results are computed once and memoized.

    Args:
        x: images [N, 3, H, W] in the model's input space (requires grad during generation).
        logits: model output [N, K].
        labels: target labels [N].
        stats: per-layer per-sample ``(mean, std)``, each [N, C_l], in BN order.
        targets: the BN running statistics.
        noise: optional generator for stochastic terms (SCI's Gaussian reference).
    """

    def __init__(self, x, logits, labels, stats, targets: BNTargets, noise: torch.Generator | None = None):
        self.x, self.logits, self.labels, self.targets, self.noise = x, logits, labels, targets, noise
        self.stats = stats
        self._memo: dict = {}
        self.num_layers = len(targets)

    @property
    def deviations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(|mu~ - mu|, |sigma~ - sigma|)`` concatenated over layers, each [N, sum_l C_l]."""
        if "dev" not in self._memo:
            mu = torch.cat([s[0] for s in self.stats], 1)
            sd = torch.cat([s[1] for s in self.stats], 1)
            tm = torch.cat(self.targets.mean).to(mu)
            ts = torch.cat(self.targets.std).to(sd)
            self._memo["dev"] = ((mu - tm).abs(), (sd - ts).abs())
        return self._memo["dev"]

    def layer_index(self) -> torch.Tensor:
        """Return the BN-layer index of every concatenated channel, [sum_l C_l] int64."""
        if "lidx" not in self._memo:
            sizes = [t.numel() for t in self.targets.mean]
            self._memo["lidx"] = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(
                self.x.device)
        return self._memo["lidx"]

    def sda_matrix(self, margins: Margins | None) -> torch.Tensor:
        """Return M [N, L] with ``M[n, l] = l^SDA_l(x_n)`` (§B.1); ``margins=None`` gives the ZeroQ loss."""
        key = ("M", id(margins))
        if key not in self._memo:
            dmu, dsd = self.deviations
            if margins is not None:
                m_d = torch.cat(margins.delta).to(dmu)
                m_g = torch.cat(margins.gamma).to(dsd)
                dmu = F.relu(dmu - m_d)
                dsd = F.relu(dsd - m_g)
            per_ch = dmu.square() + dsd.square()  # [N, sumC]
            M = torch.zeros(per_ch.shape[0], self.num_layers, dtype=per_ch.dtype, device=per_ch.device)
            M = M.index_add(1, self.layer_index(), per_ch)
            self._memo[key] = M
        return self._memo[key]


class Term:
    """Base class: a named scalar function of a :class:`StepContext`."""

    name = "term"

    def __call__(self, ctx: StepContext) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __add__(self, other) -> "Objective":
        return Objective([(1.0, self)]) + other

    def __mul__(self, w: float) -> "Objective":
        return Objective([(float(w), self)])

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Objective:
    """A weighted sum of terms. ``obj(ctx)`` returns ``(total, {name: weighted value (float)})``."""

    def __init__(self, terms: list[tuple[float, Term]]):
        self.terms = list(terms)
        names = [t.name for _, t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate term names in objective: {names}")

    def __add__(self, other) -> "Objective":
        if isinstance(other, Term):
            other = Objective([(1.0, other)])
        return Objective(self.terms + other.terms)

    def __mul__(self, w: float) -> "Objective":
        return Objective([(w * a, t) for a, t in self.terms])

    __rmul__ = __mul__

    @property
    def names(self) -> list[str]:
        return [t.name for _, t in self.terms]

    def __call__(self, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {}
        total = None
        for w, t in self.terms:
            if w == 0:
                continue
            v = w * t(ctx)
            values[t.name] = v.detach()
            total = v if total is None else total + v
        if total is None:
            total = ctx.x.sum() * 0.0
        return total, values

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{t!r}" for w, t in self.terms)


class BNAlignment(Term):
    """ZeroQ's per-sample BN loss ``sum_l 1/N sum_n ||mu~_l(x_n)-mu_l||^2 + ||sigma~_l(x_n)-sigma_l||^2`` (§A.1)."""

    name = "bn"

    def __call__(self, ctx):
        M = ctx.sda_matrix(None)
        return M.sum() / M.shape[0]


class SlackBNAlignment(Term):
    """Slack Distribution Alignment (§B.1): the hinge ``[|Δ| - margin]_+^2`` summed over channels and layers,
    averaged over samples. Zero margins give :class:`BNAlignment` exactly."""

    name = "sda"

    def __init__(self, margins: Margins):
        self.margins = margins

    def __call__(self, ctx):
        M = ctx.sda_matrix(self.margins)
        return M.sum() / M.shape[0]

    def __repr__(self):
        return "SlackBNAlignment(margins)"


def lse_weights(num_layers: int, num_samples: int, weight: float = 2.0, limit: int | None = None,
                offset: int = 0) -> torch.Tensor:
    """Return the LSE weight matrix W [N, L]: ``W[j, a(j)] = weight`` with ``a(j) = (j + offset) mod L``, else 1.

    This is the Hadamard reading of ``X_LSE = I + 1 1^T`` (§B.2) generalised to any N. ``limit`` (the official
    code's ``layer_num=20``) restricts enhancement to samples and layers below ``limit`` and, as in that code
    (row ``i`` of layer ``i``), to samples whose index is a layer index: no wrap-around ``j mod L``.
    """
    W = torch.ones(num_samples, num_layers)
    j = torch.arange(num_samples)
    a = (j + offset) % num_layers
    keep = torch.ones(num_samples, dtype=torch.bool)
    if limit is not None:
        keep = (j + offset < limit) & (j + offset < num_layers)
    W[j[keep], a[keep]] = weight
    return W


class LayerwiseEnhancement(Term):
    """Layerwise Sample Enhancement (§B.2): sample j counts layer ``a(j) = j mod L`` with weight ``weight``.

    Returns only the *extra* part ``1/N sum_j (weight - 1) M[j, a(j)]`` so that ``sda + lse`` equals
    ``1/N 1^T (W ⊙ M) 1``. Paper weight 2 (on the squared term); the official PTQ code's effective weight is 4.
    ``margins=None`` enhances the plain ZeroQ matrix (the ``zeroq+ce+lse`` ablation).
    """

    name = "lse"

    def __init__(self, margins: Margins | None, weight: float = 2.0, limit: int | None = None, offset: int = 0):
        self.margins, self.weight, self.limit, self.offset = margins, weight, limit, offset

    def __call__(self, ctx):
        M = ctx.sda_matrix(self.margins)
        W = lse_weights(M.shape[1], M.shape[0], self.weight, self.limit, self.offset).to(M)
        return ((W - 1.0) * M).sum() / M.shape[0]

    def __repr__(self):
        return f"LayerwiseEnhancement(weight={self.weight}, limit={self.limit})"


def cosine_gram(x: torch.Tensor) -> torch.Tensor:
    """Return the cosine-similarity Gram matrix [N, N] (float64) of ``x`` [N, ...] (rows flattened, L2-normalised).

    The product ``f f^T`` runs in the input dtype; only the [N, N] result is normalised in float64 (for ``eigh`` and
    its backward). Normalising the [N, D] rows in float64 first gives the same matrix to ~3e-8 and made the SCI term
    2.5-2.7x slower at N = 64-256 (benchmarks/bench_sci.py, docs/benchmarks.md).
    """
    f = x.flatten(1)
    g = (f @ f.T).double()
    d = g.diagonal().clamp_min(1e-24).rsqrt()  # 1 / max(||f_i||, 1e-12), as F.normalize
    return g * d[:, None] * d[None, :]


def sci_loss(x: torch.Tensor, mode: str = "intended", noise: torch.Generator | None = None) -> torch.Tensor:
    """Sample Correlation Inhibition on ``x`` [N, ...] (§B.3), before the 1/L weight.

    * ``"intended"``: GDPP against i.i.d. Gaussian noise with ``torch.linalg.eigh`` (ascending, both sorted the
      same way) and a sign-invariant structure term:
      ``1e-4 * mean_i (λ_i - λ^G_i)^2 - sum_i λbar^G_i |<u_i, u^G_i>|``.
    * ``"offdiag"``: mean squared off-diagonal cosine similarity ``mean_{i≠j} K_ij^2``.
    * ``"faithful"``: like the released code, **no gradient** (its ``Variable(...)`` wrappers detach the
      eigenpairs, §B.3), so the term only adds a value to the total loss (which the plateau scheduler sees). The
      value is *not* the released one: this computes the ``"intended"`` formula without gradient, whereas the
      released ``compute_sci`` uses ``torch.eig`` (unsorted eigenpairs, removed from PyTorch) and the structure
      term ``|sum_i λbar^G_i (-<u_i, u^G_i>)|`` with arbitrary eigenvector signs; both are random values of the same
      magnitude, so only ReduceLROnPlateau's decisions can differ.
    """
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0.0
    K = cosine_gram(x)
    if mode == "offdiag":
        off = K - torch.diag_embed(torch.diagonal(K))
        return (off.square().sum() / (n * (n - 1))).to(x.dtype)
    g = torch.randn(x.shape, generator=noise, device="cpu").to(x.device)  # fp32 draw: 5× cheaper than fp64
    with torch.no_grad():  # the noise reference needs no gradient and no float64: its spectrum is only a target
        gf = F.normalize(g.flatten(1), dim=1)
        lam_g, u_g = (t.double() for t in torch.linalg.eigh(gf @ gf.T))
    if mode == "faithful":
        with torch.no_grad():
            lam, u = torch.linalg.eigh(K)
    elif mode == "intended":
        lam, u = torch.linalg.eigh(K)
    else:
        raise ValueError(f"unknown SCI mode {mode!r}; use 'intended', 'offdiag' or 'faithful'")
    lam_bar = (lam_g - lam_g.min()) / (lam_g.max() - lam_g.min()).clamp_min(1e-12)
    eig_term = 1e-4 * (lam - lam_g).square().mean()
    struct = -(lam_bar * (u * u_g).sum(0).abs()).sum()
    return (eig_term + struct).to(x.dtype)


class CorrelationInhibition(Term):
    """SCI term (§B.3) on pixels (``on="pixels"``, the released code) or the logits (``on="logits"``). Weight it by
    1/L. An unknown ``on`` or ``mode`` raises :class:`~dsg_viz.errors.ConfigError` (no silent fallback)."""

    name = "sci"

    def __init__(self, mode: str = "intended", on: str = "pixels"):
        if on not in ("pixels", "logits"):
            raise ConfigError(f"unknown SCI input {on!r}; use 'pixels' (the released code) or 'logits'")
        if mode not in ("intended", "offdiag", "faithful"):
            raise ConfigError(f"unknown SCI mode {mode!r}; use 'intended', 'offdiag' or 'faithful'")
        self.mode, self.on = mode, on

    def __call__(self, ctx):
        src = ctx.x if self.on == "pixels" else ctx.logits
        return sci_loss(src, self.mode, ctx.noise)

    def __repr__(self):
        return f"CorrelationInhibition(mode={self.mode!r}, on={self.on!r})"


class InputStats(Term):
    """Input-statistics term ``1/N sum_n ||mu~_0(x_n)||^2 + ||sigma~_0(x_n) - 1||^2`` (§A.1)."""

    name = "input"

    def __call__(self, ctx):
        mu, sd = per_sample_stats(ctx.x)
        return (mu.square().sum(1) + (sd - 1).square().sum(1)).mean()


class CrossEntropy(Term):
    """Cross-entropy of the logits to the sampled labels."""

    name = "ce"

    def __call__(self, ctx):
        return F.cross_entropy(ctx.logits.float(), ctx.labels)


class TotalVariation(Term):
    """TV_2 of §C.1: sum of the (non-squared) Frobenius norms of four neighbour differences over the batch."""

    name = "tv"

    def __call__(self, ctx):
        x = ctx.x
        d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
        d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
        d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
        d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
        return d1.norm() + d2.norm() + d3.norm() + d4.norm()


class ImageL2(Term):
    """Image prior ``1/N sum_n ||x_n||_2``."""

    name = "l2"

    def __call__(self, ctx):
        return ctx.x.flatten(1).norm(dim=1).mean()
