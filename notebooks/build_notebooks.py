"""Write the tutorial notebooks 00–05 (outputs stripped) from the cell lists below.

    python notebooks/build_notebooks.py          # regenerate every notebook
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook differs from this script

Edit the cells here, not in the .ipynb files, so the notebooks stay reviewable and regenerable. Notebooks define no
functions: helpers live in ``dsg_viz.notebook_utils`` and the panels in ``dsg_viz.widgets``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
from dataclasses import replace

import torch
from IPython.display import Markdown, display

from dsg_viz import notebook_utils as nu"""

PARAMS_NOTE = """\
# Parameters. DSG_VIZ_SMOKE=1 (set by the test suite) shrinks steps, samples and the evaluation so the notebook
# runs in seconds; the other values are realistic settings.
import os
from pathlib import Path

SMOKE = os.environ.get("DSG_VIZ_SMOKE") == "1"
SEED = 0
# The shared sample cache (dsg_viz.cache): the same folder and keys as `make demo`, `dsg-viz compare` and the panels,
# so a set made by any of them with the same settings loads at once ($DSG_VIZ_SAMPLE_CACHE, else ../runs/cache).
CACHE_DIR = Path(os.environ.get("DSG_VIZ_SAMPLE_CACHE", "../runs/cache"))"""

TIMING = ("Full settings (256 samples × 500 steps per source) take several minutes per generated source on 2 CPU "
          "cores (roughly 5–10 min, more for DSG than for ZeroQ) and well under a minute on a GPU. Every sample set "
          "is saved in the shared sample cache `CACHE_DIR` and loaded from there the next time (the cell says so); "
          "delete the file or call `nu.cached_samples(..., recompute=True)` to recompute. `dsg-viz compare "
          "--num-samples 256 --steps 500 --batch-size 64 --seeds 1 --out ../runs/cmp` (run from the repository root) "
          "fills the same cache from a terminal.")


def _join(parts, sep: str) -> str:
    """Dedent each part on its own (so indented blocks and flush-left constants mix), then join them."""
    return sep.join(textwrap.dedent(p).strip("\n") for p in parts)


def md(*parts: str):
    return new_markdown_cell(_join(parts, "\n\n"))


def code(*parts: str, tags: tuple[str, ...] = ()):
    c = new_code_cell(_join(parts, "\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def params(extra: str):
    return code(PARAMS_NOTE, extra, tags=("parameters",))


# ------------------------------------------------------------------------------------------------------ 00

NB00 = [
    md("""
    # 00 · Quickstart: data-free quantization in a dozen cells

    **What you will learn**
    - how a pretrained network's BatchNorm (BN) statistics stand in for the training data;
    - how to generate calibration images from them with **ZeroQ** and with **DSG** (Diverse Sample Generation);
    - how to quantize the network to 4-bit weights and activations (W4A4), calibrate it on each sample set and
      measure its accuracy;
    - how noise, ZeroQ, DSG and real images compare as calibration data.

    The model is the ResNet-20 fine-tuned on the JPEG CIFAR-10 images of the data root
    (`DSG_VIZ_DATA_ROOT`, e.g. `../shared`).
    """, TIMING),
    params("""
    # make demo's settings (dsg_viz.compare.DEMO): after `make demo` these sets load from the cache at once
    NUM_SAMPLES = 16 if SMOKE else 128      # calibration images per source
    STEPS = 4 if SMOKE else 200             # optimization steps per batch (the paper's 500 in docs/results.md)
    BATCH_SIZE = 16 if SMOKE else 128
    EVAL_LIMIT = 200 if SMOKE else None     # None = all 10,000 test images
    SOURCES = ("gaussian", "zeroq", "dsg", "real")
    BITS = ("W4A4",) if SMOKE else ("W4A4", "W6A6")"""),
    code(SETUP, """
    from dsg_viz import QuantConfig, calibrate, evaluate, quantize
    from dsg_viz.compare import results_markdown
    from dsg_viz.diagnostics import plot_image_grid"""),
    md("""
    ## 1. The full-precision model
    Every BN layer keeps a running mean and variance per channel of its input, averaged over the training set.
    Those numbers are the only "data" data-free quantization uses."""),
    code("""
    model = nu.load_demo_model()
    test = nu.test_split(EVAL_LIMIT)
    fp = evaluate(model, test)
    print(f"{model.spec.name}: {len(model.spec.mean)} input channels, {model.spec.num_bn} BN layers; "
          f"full-precision top-1 {fp['top1']:.2f} % on {fp['n']} test images")"""),
    md("""
    ## 2. Four calibration sets
    - `gaussian`: N(0, 1) noise in the model's input space, no optimization;
    - `zeroq`: the published ZeroQ — near-constant noise optimized so that **each sample's** BN-input statistics
      match the BN running statistics;
    - `dsg`: the paper's DSG — N(0, 1) noise optimized with DSG's relaxed, diversity-preserving objective (plus
      the cross-entropy and image priors of DSG's released code);
    - `real`: real training images — not data-free, the upper reference.

    The next cell loads a set from `CACHE_DIR` when it exists (after `make demo`, all four do) and generates it
    otherwise (a progress bar shows)."""),
    code("""
    cfg = nu.sample_config(NUM_SAMPLES, STEPS, BATCH_SIZE)
    samples = {src: nu.cached_samples(model, src, cfg, SEED, CACHE_DIR) for src in SOURCES}"""),
    code("""
    plot_image_grid({k: s.images for k, s in samples.items()}, model.spec.mean, model.spec.std, n=16, nrow=4)"""),
    md("""
    ## 3. Quantize once, by hand
    `quantize` returns a fake-quantized **copy** (the BN statistics of the original stay intact); `calibrate` sets
    the activation ranges from a sample set; `evaluate` measures top-1."""),
    code("""
    qm = quantize(model, QuantConfig(w_bits=4, a_bits=4))
    calibrate(qm, samples["dsg"])
    r = evaluate(qm, test)
    print(qm.describe())
    print(f"\\nW4A4 calibrated on DSG samples: top-1 {r['top1']:.2f} % (full precision {fp['top1']:.2f} %)")"""),
    md("""
    ## 4. The table: every source at every bit width
    Each cell below is what `dsg-viz compare` computes: quantize a copy, calibrate on that source, evaluate."""),
    code("""
    qcfg = replace(cfg, sources=SOURCES, bits=BITS)
    results = nu.quantize_sources(model, samples, qcfg, test, fp=fp)
    display(Markdown(results_markdown(results, qcfg)))"""),
    code("""
    nu.plot_results(results, qcfg)"""),
    code("""
    row = {src: results["table"]["calib"][src]["W4A4"]["mean"] for src in SOURCES}
    print("W4A4 top-1: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print(f"DSG − ZeroQ: {row['dsg'] - row['zeroq']:+.2f} points; "
          f"real − DSG: {row['real'] - row['dsg']:+.2f} points")"""),
    md("""
    ## Next
    - `01_bn_statistics` — what the BN statistics look like, for real images and for noise;
    - `02_zeroq_vs_dsg` — the two objectives side by side, with a panel to change ε, LSE, SCI and steps;
    - `03_homogenization` — why ZeroQ samples look alike, measured;
    - `04_quantize` — quantizers, calibration methods, bit widths and layer conventions;
    - `05_ablation_and_beyond` — which DSG component does what, and what comes after calibration.

    In smoke mode (few samples, few steps) the numbers above are noisy; run with full settings for real results."""),
]

# ------------------------------------------------------------------------------------------------------ 01

NB01 = [
    md("""
    # 01 · BatchNorm statistics: the data behind data-free quantization

    **What you will learn**
    - what a BN layer stores, and what "BN statistics" of an input batch are;
    - how to read the input of every BN layer with `capture_bn` (forward pre-hooks that are always removed);
    - how real images and Gaussian noise compare with the BN statistics, layer by layer;
    - how to explore any layer and channel with a small widget.

    Runs in well under a minute (no optimization here)."""),
    params("""
    NUM_SAMPLES = 16 if SMOKE else 256      # images per source
    MAX_VALUES = 2000 if SMOKE else 20000   # BN-input values kept per channel for histograms"""),
    code(SETUP, """
    import pandas as pd

    from dsg_viz import bn_targets, capture_bn, make_samples
    from dsg_viz.bn import has_hooks
    from dsg_viz.diagnostics import collect_features, plot_bn_histograms, plot_layer_scores, summarize
    from dsg_viz.widgets import LayerChannelPanel"""),
    md("""
    ## 1. What BN stores
    A BN layer normalizes its input $a$ channel by channel,
    $\\hat a = \\gamma\\,(a-\\mu)/\\sqrt{\\sigma^2+\\epsilon}+\\beta$, with a running mean $\\mu$ and
    variance $\\sigma^2$ averaged over training batches. So each BN layer $l$ remembers, per channel, how its
    input was distributed on the training data. ZeroQ and DSG synthesize images whose BN
    inputs reproduce these statistics."""),
    code("""
    model = nu.load_demo_model()
    targets = bn_targets(model)
    pd.DataFrame({"BN layer": targets.names,
                  "channels": [m.numel() for m in targets.mean],
                  "mean |μ|": [m.abs().mean().item() for m in targets.mean],
                  "mean σ": [s.mean().item() for s in targets.std]}).round(3)"""),
    md("""
    ## 2. Reading the BN input
    `capture_bn` registers forward **pre**-hooks on the BN modules (so it sees the BN *input*) and removes them on
    exit. Per sample and channel it records the spatial mean and std — the statistics the generation losses use."""),
    code("""
    real = make_samples(model, "real", NUM_SAMPLES, seed=SEED)
    noise = make_samples(model, "gaussian", NUM_SAMPLES, seed=SEED, progress=False)
    with capture_bn(model, keep="stats") as cap:
        model(real.images[:8])
    mu, sd = cap.stats[0]
    print(f"layer {cap.names[0]}: per-sample means {tuple(mu.shape)}, stds {tuple(sd.shape)}; "
          f"hooks left on the model: {has_hooks(model)}")"""),
    md("""
    ## 3. Real images vs Gaussian noise, layer by layer
    For each source we collect the BN inputs and score them against the BN Gaussian $N(\\mu, \\sigma^2)$ of each
    channel: the Wasserstein-1 distance (in units of σ), the offset of the batch mean and the ratio of the batch
    std, averaged over channels."""),
    code("""
    feats = {"real": collect_features(model, real.images, max_values=MAX_VALUES, labels=real.labels),
             "gaussian": collect_features(model, noise.images, max_values=MAX_VALUES)}
    summary = summarize(feats, targets)
    plot_layer_scores(summary["per_layer"], ("w1", "offset", "std_ratio"), logy=("w1", "offset"))"""),
    code("""
    for key in ("w1", "offset", "std_ratio"):
        display(Markdown(nu.score_line(summary, key)))
    w1 = summary["per_layer"]
    print(f"W1 of noise: first layer {w1['gaussian']['w1'][0]:.2f}σ, last layer {w1['gaussian']['w1'][-1]:.2f}σ; "
          f"of real images: {w1['real']['w1'][0]:.2f}σ and {w1['real']['w1'][-1]:.2f}σ")"""),
    md("""
    Histograms of one channel in the first, middle and last BN layer (the black curve is the BN Gaussian).
    Real images need not fit it exactly either: BN statistics are averages over the whole training set."""),
    code("""
    L = len(targets)
    for li in (0, L // 2, L - 1):
        mu_c, sd_c = targets.mean[li][0].item(), targets.std[li][0].item()
        display(plot_bn_histograms({k: f.values[li][0] for k, f in feats.items()}, mu_c, sd_c,
                                   title=f"{targets.names[li]} (layer {li}), channel 0"))"""),
    md("""
    ## 4. Explore any layer and channel
    The panel redraws as you change the layer or channel (the features are already collected, so this is cheap).
    Its last result stays in `panel.result`."""),
    code("""
    panel = LayerChannelPanel(model, feats)
    panel.run()
    panel"""),
    code("""
    r = panel.result
    print(f"{r['layer']} channel {r['channel']}: BN μ = {r['mu']:.3f}, σ = {r['sigma']:.3f}; W1 "
          + ", ".join(f"{k} {v:.3f}σ" for k, v in r["w1"].items()))"""),
    md("""
    **Takeaway.** Noise matches the BN statistics poorly, and the mismatch differs from layer to layer; the
    generation methods of the next notebook optimize the noise until its BN inputs match. How tightly they should
    match is exactly where ZeroQ and DSG differ."""),
]

# ------------------------------------------------------------------------------------------------------ 02

NB02 = [
    md("""
    # 02 · ZeroQ vs DSG: two objectives, one seed

    **What you will learn**
    - the exact difference between the published `zeroq`, the shared base `zeroq+ce` and `dsg` (the diff between
      `zeroq+ce` and `dsg` *is* the method);
    - what each DSG term does: slack distribution alignment (SDA), layerwise sample enhancement (LSE) and sample
      correlation inhibition (SCI);
    - how images and per-term loss curves evolve from the same starting noise;
    - how to change ε (the margin quantile), the LSE and SCI weights, the steps and the seed in a panel and rerun.

    """, TIMING),
    params("""
    NUM_SAMPLES = 16 if SMOKE else 256
    STEPS = 4 if SMOKE else 500
    BATCH_SIZE = 16 if SMOKE else 64
    PANEL_SAMPLES = 8 if SMOKE else 64      # the panel's default size: quick enough to click
    PANEL_STEPS = 3 if SMOKE else 200"""),
    code(SETUP, """
    from dsg_viz.diagnostics import plot_image_grid, plot_loss_curves_by_source
    from dsg_viz.diagnostics.metrics import correlation_scores
    from dsg_viz.diagnostics.plots import new_figure
    from dsg_viz.margins import compute_margins
    from dsg_viz.widgets import GenerationPanel"""),
    md("""
    ## 1. The objectives
    Both optimize the pixels with Adam (lr 0.5). They differ in how the BN statistics are matched:

    - **ZeroQ** (`zeroq`, the published method): every sample's per-channel mean and std at every BN layer must equal
      the BN running statistics,
      $\\sum_l \\|\\tilde\\mu_l(x)-\\mu_l\\|^2 + \\|\\tilde\\sigma_l(x)-\\sigma_l\\|^2$, plus the input statistics;
      it starts from near-constant noise. Every sample is pushed to the same point: the samples become alike
      (*homogenization*).
    - **DSG** (`dsg`) starts from N(0, 1) noise and adds a cross-entropy term toward random labels and small image
      priors (as DSG's released code does: `zeroq+ce` is ZeroQ's loss with just these additions), then changes the
      statistic matching:
      - **SDA** replaces ZeroQ's loss by a hinge with slack margins $\\delta_l, \\gamma_l$: deviations inside the
        margins cost nothing. The margins are the ε-quantile (ε = 0.9) of the deviations of a batch of noise.
      - **LSE** weights, for each sample, one layer more than the others, so different samples fit different layers.
      - **SCI** penalizes correlation between samples.

    The table lists every setting that differs among the three presets."""),
    code("""
    display(Markdown(nu.preset_diff("zeroq", "zeroq+ce", "dsg")))"""),
    code("""
    model = nu.load_demo_model()
    margins = compute_margins(model, BATCH_SIZE, quantile=0.9, seed=SEED)
    delta, gamma = margins.layer_means()
    fig, (ax,) = new_figure(1, panel=(7.0, 2.8))
    ax.plot(delta, "o-", label="δ (mean)")
    ax.plot(gamma, "s-", label="γ (std)")
    ax.set_xlabel("BN layer")
    ax.set_ylabel("SDA margin")
    ax.legend()
    fig"""),
    md("""
    ## 2. Same seed, two objectives
    The seed fixes the starting noise and the target labels, so the two sets differ only by their objective."""),
    code("""
    cfg = nu.sample_config(NUM_SAMPLES, STEPS, BATCH_SIZE)
    samples = {src: nu.cached_samples(model, src, cfg, SEED, CACHE_DIR) for src in ("zeroq", "dsg")}
    plot_image_grid({k: s.images for k, s in samples.items()}, model.spec.mean, model.spec.std, n=16, nrow=4)"""),
    md("""
    ## 3. Per-term loss curves
    Each objective returns its terms by name, so every curve can be plotted (weighted values, mean over batches).
    The `bn` term of ZeroQ keeps falling; DSG's `sda` term can reach zero once every statistic is inside its
    margin, and `sci` may go negative."""),
    code("""
    plot_loss_curves_by_source({k: s.history for k, s in samples.items()})"""),
    code("""
    for k, s in samples.items():
        final = {t: v[-1][-1] for t, v in s.history.items() if v and v[-1]}
        print(f"{k:6s} final: " + ", ".join(f"{t} {v:.4g}" for t, v in final.items()))"""),
    md("""
    ## 4. Your turn: the generation panel
    Pick a preset, change ε (margin quantile), the margin scale, the LSE weight (1 = off), the SCI mode and weight,
    the steps, the number of samples and the seed, then click **Run**. The panel shows the new images next to the
    ZeroQ set above, with the loss curves. Results go to the shared sample cache (`CACHE_DIR`), so repeating a
    setting is instant (tick *recompute* to regenerate). An invalid value (say, ε = 2) gives a one-line error
    instead of a traceback."""),
    code("""
    panel = GenerationPanel(model, "dsg", seed=SEED, compare_to={"zeroq": samples["zeroq"]},
                            cache_dir=CACHE_DIR, num_samples=PANEL_SAMPLES, steps=PANEL_STEPS,
                            batch_size=PANEL_SAMPLES)
    panel"""),
    md("""
    Clicking **Run** and running the next cell do exactly the same thing."""),
    code("""
    panel.run();"""),
    md("""
    The panel keeps its last result in `panel.result` (a `SampleSet`), ready for later cells. For example, how
    correlated are its samples, in pixels, compared with ZeroQ's? (Mean absolute off-diagonal cosine similarity:
    lower = more diverse.)"""),
    code("""
    res = panel.result
    for name, s in {"zeroq": samples["zeroq"], f"panel ({res.method})": res}.items():
        sc = correlation_scores(s.images)
        print(f"{name:14s} mean |cos| off-diagonal {sc['offdiag_cos']:.3f}, effective rank {sc['erank']:.1f} "
              f"of {len(s)}")"""),
    md("""
    **Takeaway.** Against its base `zeroq+ce`, DSG changes only the statistic-matching part of the objective; against
    the published ZeroQ it also starts from N(0, 1) noise and adds cross-entropy and image priors. The next notebook
    measures what that does to the samples (`03_homogenization`)."""),
]

# ------------------------------------------------------------------------------------------------------ 03

NB03 = [
    md("""
    # 03 · Homogenization, measured

    **What you will learn**
    - the three levels at which synthetic samples can be too alike: the **distribution** of BN inputs, the
      **per-sample** statistics, and the **correlation between samples**;
    - how to read each diagnostic; every plot below comes with its number for each source and a one-line
      conclusion computed from those numbers;
    - how real, noise, ZeroQ and DSG samples sit in a t-SNE map of the network's features.

    """, TIMING),
    params("""
    NUM_SAMPLES = 16 if SMOKE else 256
    STEPS = 4 if SMOKE else 500
    BATCH_SIZE = 16 if SMOKE else 64
    MAX_VALUES = 2000 if SMOKE else 20000   # BN-input values kept per channel
    TSNE_POINTS = 64 if SMOKE else 1000     # t-SNE points over all sources
    PERPLEXITY = 5.0 if SMOKE else 30.0
    RUN_REPORT = not SMOKE                  # the one-call report at the end (about a minute at full size)"""),
    code(SETUP, """
    from dsg_viz import bn_targets
    from dsg_viz.diagnostics import (collect_features, plot_bn_histograms, plot_correlation_matrices,
                                     plot_dispersion_curves, plot_eigenspectra, plot_embedding, plot_layer_scores,
                                     plot_mean_std_scatter, summarize, summary_markdown)
    from dsg_viz.diagnostics import metrics as M
    from dsg_viz.widgets import DiagnosticsConfig, DiagnosticsPanel"""),
    code("""
    model = nu.load_demo_model()
    targets = bn_targets(model)
    cfg = nu.sample_config(NUM_SAMPLES, STEPS, BATCH_SIZE)
    samples = {src: nu.cached_samples(model, src, cfg, SEED, CACHE_DIR) for src in ("real", "gaussian", "zeroq", "dsg")}
    feats = {k: collect_features(model, s.images, max_values=MAX_VALUES, labels=s.labels) for k, s in samples.items()}
    summary = summarize(feats, targets, reference="real", seed=SEED)
    display(Markdown(summary_markdown(summary)))"""),
    md("""
    ## 1. Distribution level
    Pool all BN-input values of one channel over the samples and compare them with the BN Gaussian. The paper's
    observation (CVPR Fig. 1a): ZeroQ samples fit it closely at every layer — closer than real data does — the
    first sign of homogenization. W1 is in units of σ; lower means closer to the Gaussian, but *closer to real* is
    what we want. The line under each plot says which of ZeroQ and DSG is closer to real in this run."""),
    code("""
    li, ch = len(targets) // 2, 0
    mu, sg = targets.mean[li][ch].item(), targets.std[li][ch].item()
    vals = {k: f.values[li][ch] for k, f in feats.items()}
    notes = {k: f"W1 = {M.wasserstein_to_gaussian(v, mu, sg):.3f}σ" for k, v in vals.items()}
    display(plot_bn_histograms(vals, mu, sg, notes=notes, title=f"{targets.names[li]} (layer {li}), channel {ch}"))
    display(Markdown(nu.score_line(summary, "w1")))"""),
    code("""
    display(plot_layer_scores(summary["per_layer"], ("w1", "offset", "std_ratio"), logy=("w1", "offset")))
    for key in ("offset", "std_ratio"):
        display(Markdown(nu.score_line(summary, key)))"""),
    md("""
    ## 2. Sample level
    Each dot is one sample's (mean, std) of that channel; the star is the BN point. ZeroQ pulls every sample onto
    the star; real samples spread around it. Dispersion $D^\\mu, D^\\sigma$ is that spread per layer (relative to σ):
    higher = more diverse samples."""),
    code("""
    display(plot_mean_std_scatter({k: (f.mean[li][:, ch], f.std[li][:, ch]) for k, f in feats.items()}, (mu, sg),
                                  title=f"{targets.names[li]}, channel {ch}"))
    display(plot_dispersion_curves(summary["per_layer"]))
    for key in ("d_mu", "d_sigma", "rel_d_mu"):
        display(Markdown(nu.score_line(summary, key)))"""),
    md("""
    ## 3. Correlation between samples
    Cosine similarity between flattened images, and Pearson correlation between penultimate features, side by
    side on one colour scale; the number in each title is the mean absolute off-diagonal value (lower = less
    correlated). N(0, 1) noise is the uncorrelated reference."""),
    code("""
    show = min(NUM_SAMPLES, 64)
    k_px = {k: M.cosine_matrix(f.images) for k, f in feats.items()}
    display(plot_correlation_matrices({f"{k} · {M.mean_abs_offdiag(m):.3f}": m for k, m in k_px.items()},
                                      max_samples=show, title="pixels: cosine similarity"))
    display(Markdown(nu.score_line(summary, "offdiag_cos_pixel")))"""),
    code("""
    k_ft = {k: M.pearson_matrix(f.penultimate) for k, f in feats.items()}
    display(plot_correlation_matrices({f"{k} · {M.mean_abs_offdiag(m):.3f}": m for k, m in k_ft.items()},
                                      max_samples=show, title="penultimate features: Pearson correlation"))
    display(Markdown(nu.score_line(summary, "offdiag_pearson_feature")))"""),
    code("""
    display(plot_eigenspectra({k: M.eigenspectrum(M.cosine_matrix(f.penultimate)) for k, f in feats.items()},
                              title="feature Gram spectra"))
    display(Markdown(nu.score_line(summary, "erank_feature")))"""),
    md("""
    ## 4. A t-SNE map of the features
    One shared 2-D embedding of the penultimate features of all sources. Homogenized samples form tight clumps away
    from real data; diverse samples spread out. The effective rank of the features (above) is the number beside this
    map."""),
    code("""
    X, groups, idx, names = M.stack_sources({k: f.penultimate for k, f in feats.items()}, TSNE_POINTS, SEED)
    emb = M.embed(X, "tsne", perplexity=PERPLEXITY, seed=SEED)
    display(plot_embedding(emb, groups, names, title=f"t-SNE of penultimate features ({len(X)} points)"))
    display(Markdown(nu.score_line(summary, "erank_feature")))"""),
    md("""
    ## 5. The one-call report
    `dsg-viz diagnose` (and the panel below) computes all of the above and writes a self-contained `report.html`.
    At full size it takes about a minute; in smoke mode it is not run automatically — click **Run**."""),
    code("""
    report = DiagnosticsPanel(model, samples, CACHE_DIR / "diagnostics",
                              DiagnosticsConfig(tsne_points=TSNE_POINTS, perplexity=PERPLEXITY, max_values=MAX_VALUES))
    if RUN_REPORT:
        report.run()
    report"""),
]

# ------------------------------------------------------------------------------------------------------ 04

NB04 = [
    md("""
    # 04 · Quantization and calibration

    **What you will learn**
    - what a uniform fake-quantizer does and how the error falls with the bit width;
    - how `quantize` builds a quantized *copy* (per-channel weights, per-tensor activations after each ReLU) that
      switches between full-precision and quantized modes;
    - the four activation calibration methods (`ema`, `minmax`, `percentile`, `mse`);
    - the accuracy of each calibration source at several bit widths, in a panel;
    - the layer convention switch: `zeroq` (every layer at the same bits) vs `brecq` (first and last layer at 8 bits).

    """, TIMING),
    params("""
    NUM_SAMPLES = 16 if SMOKE else 256
    STEPS = 4 if SMOKE else 500
    BATCH_SIZE = 16 if SMOKE else 64
    EVAL_LIMIT = 200 if SMOKE else None     # None = all 10,000 test images
    BITS = ("W4A4",) if SMOKE else ("W4A4", "W6A6", "W8A8")
    CONVENTION_SOURCES = ("dsg",) if SMOKE else ("zeroq", "dsg")"""),
    code(SETUP, """
    import pandas as pd

    from dsg_viz import QuantConfig, calibrate, evaluate, quantize
    from dsg_viz.compare import results_markdown
    from dsg_viz.diagnostics.plots import new_figure
    from dsg_viz.quant import fake_quantize
    from dsg_viz.quant.quantize import ACT_METHODS, CONVENTIONS
    from dsg_viz.widgets import QuantPanel"""),
    md("""
    ## 1. A uniform quantizer
    With range $[x_{min}, x_{max}]$ and $b$ bits the step is $s = (x_{max}-x_{min})/(2^b-1)$; a value is rounded to
    the grid, $\\hat x = s\\,\\mathrm{round}((x - x_{min})/s) + x_{min}$, after clipping to the range. "Fake"
    quantization keeps floats but only grid values, so any PyTorch model can run it. Each extra bit halves the step:
    the squared error falls about 4× per bit."""),
    code("""
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(SEED))
    rows = [{"bits": b, "MSE": (fake_quantize(x, x.min(), x.max(), b) - x).pow(2).mean().item()} for b in range(2, 9)]
    fig, (ax,) = new_figure(1, panel=(4.5, 3.0))
    ax.semilogy([r["bits"] for r in rows], [r["MSE"] for r in rows], "o-")
    ax.set_xlabel("bits")
    ax.set_ylabel("mean squared error")
    fig"""),
    md("""
    ## 2. A quantized copy of the model
    `quantize(model, QuantConfig(...))` deep-copies the network and swaps every conv/linear layer for a version
    with a weight quantizer and every ReLU for one followed by an activation quantizer. The original model is left
    untouched: its BN statistics are the data source. `describe()` states the convention in one line."""),
    code("""
    model = nu.load_demo_model()
    test = nu.test_split(EVAL_LIMIT)
    fp = evaluate(model, test)
    qm = quantize(model, QuantConfig(w_bits=4, a_bits=4))
    print(qm.describe())
    print(f"\\n{len(qm.weight_quantizers())} weight quantizers, {len(qm.act_quantizers())} activation quantizers")
    with qm.using_mode("weight"):
        w_only = evaluate(qm, test)
    print(f"full precision {fp['top1']:.2f} %, 4-bit weights only {w_only['top1']:.2f} % "
          "(activations need calibration first)")"""),
    md("""
    ## 3. Calibration data and calibration methods
    Activation quantizers need a range per layer, observed on calibration images. We generate (or load) the four
    sample sets, then compare the calibration methods on the DSG set at W4A4."""),
    code("""
    cfg = nu.sample_config(NUM_SAMPLES, STEPS, BATCH_SIZE)
    samples = {src: nu.cached_samples(model, src, cfg, SEED, CACHE_DIR)
               for src in ("gaussian", "zeroq", "dsg", "real")}"""),
    code("""
    rows = []
    for method in ACT_METHODS:
        qm = calibrate(quantize(model, QuantConfig(w_bits=4, a_bits=4, act_method=method)), samples["dsg"])
        hi = [r[1] for r in qm.act_ranges().values()]
        rows.append({"method": method, "top-1 (%)": evaluate(qm, test)["top1"],
                     "mean upper clip": sum(hi) / len(hi), "largest upper clip": max(hi)})
    pd.DataFrame(rows).round(3)"""),
    md("""
    `minmax` keeps every outlier and wastes grid steps on them; `ema` (ZeroQ's default) averages per-sample
    extremes; `percentile` and `mse` clip harder. The best choice depends on the calibration data: rerun the
    panel below with another method to see.

    ## 4. Sources × bit widths
    The panel quantizes a copy per cell, calibrates it on the chosen source and evaluates it — the same call as
    `dsg-viz compare`. Change the bit widths (e.g. `W4A4, W6A6, W8A8`), the calibration method, the weight range,
    the convention or the sources and click **Run**."""),
    code("""
    panel = QuantPanel(model, samples, test, config=replace(cfg, sources=tuple(samples), bits=BITS))
    panel.run()
    panel"""),
    code("""
    pd.DataFrame(nu.accuracy_rows(panel.result)).set_index("source")"""),
    md("""
    ## 5. The layer convention switch
    ZeroQ's evaluation quantizes **every** layer at the same bit width, the first conv and the last linear layer
    included; BRECQ-style papers keep those two at 8 bits. The same samples give quite different numbers, so a
    table must say which convention it uses."""),
    code("""
    rows = []
    for conv in CONVENTIONS:
        ccfg = replace(cfg, sources=CONVENTION_SOURCES, bits=("W4A4",), convention=conv)
        res = nu.quantize_sources(model, samples, ccfg, test, fp=fp)
        rows += [{"convention": conv, **r} for r in nu.accuracy_rows(res)]
    pd.DataFrame(rows).pivot(index="source", columns="convention", values="W4A4").round(2)"""),
]

# ------------------------------------------------------------------------------------------------------ 05

NB05 = [
    md("""
    # 05 · Ablation, and beyond calibration

    **What you will learn**
    - what each DSG component contributes on its own: SDA, LSE and SCI added one at a time to DSG's base `zeroq+ce`
      (ZeroQ's loss + cross-entropy and image priors: `zeroq+ce+sda`, `zeroq+ce+lse`, `zeroq+ce+sci`), next to the
      published `zeroq`, full `dsg` and `dsg-official` (the released code's behaviour);
    - how to read diversity scores and accuracy side by side for each variant;
    - where reconstruction-based PTQ (AdaRound, BRECQ) and generator-based DSG with quantization-aware training
      (QAT) fit in. Those two are being added to dsg_viz by other work in progress: their cells check whether the
      modules exist and run (or explain) accordingly, so this notebook works with or without them.

    """, TIMING + " Seven generated sources make this the longest notebook at full size."),
    params("""
    NUM_SAMPLES = 16 if SMOKE else 256
    STEPS = 4 if SMOKE else 500
    BATCH_SIZE = 16 if SMOKE else 64
    EVAL_LIMIT = 200 if SMOKE else None
    MAX_VALUES = 2000 if SMOKE else 20000
    BITS = ("W4A4",)
    ABLATION = ("zeroq", "zeroq+ce", "zeroq+ce+sda", "zeroq+ce+lse", "zeroq+ce+sci", "dsg", "dsg-official")"""),
    code(SETUP, """
    import pandas as pd

    from dsg_viz import bn_targets, evaluate
    from dsg_viz.compare import results_markdown
    from dsg_viz.diagnostics import collect_features, summarize"""),
    md("""
    ## 1. The variants
    Every variant is a preset: the table lists the settings that differ. Each `zeroq+ce+…` row is the base plus one
    component, with that component set as in `dsg`. `dsg-official` reproduces the released code (learning rate 0.9,
    uniform init, LSE weight 4 on the first 20 samples, SCI without gradient, CE counted twice) — see
    `../shared/docs/dsg-method.md` §C.1."""),
    code("""
    display(Markdown(nu.preset_diff(*ABLATION)))"""),
    code("""
    model = nu.load_demo_model()
    test = nu.test_split(EVAL_LIMIT)
    fp = evaluate(model, test)
    cfg = nu.sample_config(NUM_SAMPLES, STEPS, BATCH_SIZE)
    samples = {src: nu.cached_samples(model, src, cfg, SEED, CACHE_DIR) for src in ("real",) + ABLATION}"""),
    md("""
    ## 2. Diversity and accuracy per variant
    Diversity: dispersion relative to real data (`rel_d_mu`, 1 = as diverse as real) and the correlation of
    penultimate features (lower = less correlated). Accuracy: W4A4 top-1 after calibrating on each set."""),
    code("""
    feats = {k: collect_features(model, s.images, max_values=MAX_VALUES) for k, s in samples.items()}
    summary = summarize(feats, bn_targets(model), reference="real", seed=SEED)
    acfg = replace(cfg, sources=ABLATION, bits=BITS)
    results = nu.quantize_sources(model, samples, acfg, test, fp=fp)
    display(Markdown(results_markdown(results, acfg)))"""),
    code("""
    table = pd.DataFrame([{"variant": v,
                           "W4A4 top-1 (%)": results["table"]["calib"][v]["W4A4"]["mean"],
                           "D^μ / D^μ(real)": summary["scores"][v]["rel_d_mu"],
                           "|Pearson| features": summary["scores"][v]["offdiag_pearson_feature"],
                           "W1 to BN Gaussian": summary["scores"][v]["w1"]} for v in ABLATION]).set_index("variant")
    table.round(3)"""),
    code("""
    nu.plot_results(results, acfg)"""),
    code("""
    best = table["W4A4 top-1 (%)"].idxmax()
    most_diverse = table["D^μ / D^μ(real)"].idxmax()
    print(f"highest W4A4 accuracy: {best}; most dispersed samples: {most_diverse}")
    for key in ("rel_d_mu", "offdiag_pearson_feature"):
        display(Markdown(nu.score_line(summary, key)))"""),
    md("""
    In smoke mode (a few steps) the variants barely move from their starting noise, so these numbers say little;
    with full settings they show which component drives the diversity and whether it pays off in accuracy.

    ## 3. Beyond calibration: reconstruction (AdaRound, BRECQ)
    Calibration only sets ranges. Reconstruction also *learns* the rounding of each weight (AdaRound) and, block by
    block, the activation steps (BRECQ), by matching the full-precision block outputs on the calibration samples —
    which makes the quality of synthetic samples matter even more. `dsg-viz compare --method calib,adaround,brecq`
    adds these rows. The module `dsg_viz.quant.reconstruct` is being added; the cell below uses it when present."""),
    code("""
    rec = nu.optional_module("dsg_viz.quant.reconstruct")
    if rec is None:
        print("dsg_viz.quant.reconstruct is not in this version of dsg_viz yet (work in progress); nothing to run.")
    else:
        display(Markdown(nu.module_summary(rec)))
        if SMOKE:
            print("smoke mode: reconstruction is skipped here (it runs many iterations per block)")
        else:
            rcfg = replace(cfg, sources=("zeroq", "dsg"), bits=BITS, methods=("calib", "adaround", "brecq"))
            rec_results = nu.quantize_sources(model, samples, rcfg, test, fp=fp)
            display(Markdown(results_markdown(rec_results, rcfg)))"""),
    md("""
    ## 4. Generator-based DSG and quantization-aware training
    The paper's QAT variant trains a conditional generator with DSG's losses against the frozen network while the
    quantized student learns from its images by distillation (`dsg-method.md` §A.2, §C.2). The generator model and
    `dsg_viz.qat` are being added; the cell below describes them when present. Training
    takes hours on a CPU, so it is started from the command line (`dsg-viz qat --help`), not from this notebook."""),
    code("""
    generator = nu.optional_module("dsg_viz.models.generator") or nu.optional_module("dsg_viz.generator")
    qat = nu.optional_module("dsg_viz.qat")
    for what, mod in (("generator", generator), ("QAT", qat)):
        if mod is None:
            print(f"The {what} module is not in this version of dsg_viz yet (work in progress).")
        else:
            display(Markdown(nu.module_summary(mod)))"""),
]

NOTEBOOKS = {
    "00_quickstart.ipynb": NB00,
    "01_bn_statistics.ipynb": NB01,
    "02_zeroq_vs_dsg.ipynb": NB02,
    "03_homogenization.ipynb": NB03,
    "04_quantize.ipynb": NB04,
    "05_ablation_and_beyond.ipynb": NB05,
}


def build(name: str, cells) -> nbformat.NotebookNode:
    """Return the notebook ``name`` with deterministic cell ids and no outputs."""
    nb = new_notebook(cells=cells)
    stem = name.split("_")[0]
    for i, c in enumerate(nb.cells):
        c["id"] = f"nb{stem}-{i:02d}"
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nbformat.validate(nb)
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check that the committed notebooks are up to date")
    args = p.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(name, cells)) + "\n"
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/build_notebooks.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
