"""Homogenization diagnostics (dsg-method.md §A.3, §F): metrics, plots and a one-call report.

* :mod:`.metrics` — :func:`collect_features` (the only model-touching function) and pure metric functions of
  arrays: distribution level (W1 / KL to the BN Gaussian, batch offset, std ratio), sample level (dispersion,
  per-sample SDA matrix), inter-sample (cosine / Pearson matrices, off-diagonal score, spectrum, effective
  rank), embeddings (t-SNE, PCA), and :func:`summarize` / :func:`summary_markdown`.
* :mod:`.plots` — ``plot_*`` functions: arrays in, ``matplotlib.figure.Figure`` out, optional ``ax``.
* :mod:`.study` — does diversity predict accuracy? :func:`rank_correlation` (Spearman ρ, bootstrap CI),
  :func:`within_group_correlation` (the same inside each source), :func:`study_rows`, :func:`correlation_table`,
  :func:`study_reading`; plotted by :func:`plot_diversity_vs_accuracy`.
* :mod:`.report` — :func:`diagnose`: features → scores → figures → ``summary.json``, ``summary.md``, PNGs and
  a self-contained ``report.html``.

Example::

    from dsg_viz import create_model, make_samples
    from dsg_viz.diagnostics import diagnose

    m = create_model("resnet20_cifar10", "resnet20_cifar10_jpeg.pt")
    sets = {s: make_samples(m, s, 256, data_root="../shared") for s in ("real", "gaussian", "zeroq", "dsg")}
    # zeroq = the published ZeroQ, dsg = the paper's DSG; zeroq+ce is their shared base (dsg_viz.generation)
    summary = diagnose(m, sets, "out/diag")
"""

from .metrics import (SCORES, Features, batch_offset, collect_features, correlation_scores, cosine_matrix,
                      dispersion, effective_rank, eigenspectrum, embed, gaussian_reference, kl_to_gaussian,
                      layer_scores, mean_abs_offdiag, pearson_matrix, pooled_stats, relative, sda_matrix,
                      stack_sources, std_ratio, summarize, summary_markdown, wasserstein_to_gaussian)
from .plots import (new_figure, plot_bn_histograms, plot_correlation_matrices, plot_dispersion_curves,
                    plot_eigenspectra, plot_embedding, plot_embedding_by_class, plot_image_grid, plot_layer_scores,
                    plot_diversity_vs_accuracy, plot_loss_curves, plot_loss_curves_by_source, plot_mean_std_scatter,
                    plot_sda_matrix, source_colors)
from .report import FIGURES, diagnose, load_accuracy
from .study import (DIVERSITY_SIGN, correlation_table, rank_correlation, study_reading, study_rows,
                    within_group_correlation)

__all__ = [
    "SCORES", "Features", "batch_offset", "collect_features", "correlation_scores", "cosine_matrix", "dispersion",
    "effective_rank", "eigenspectrum", "embed", "gaussian_reference", "kl_to_gaussian", "layer_scores",
    "mean_abs_offdiag", "pearson_matrix", "pooled_stats", "relative", "sda_matrix", "stack_sources", "std_ratio",
    "summarize", "summary_markdown", "wasserstein_to_gaussian",
    "new_figure", "plot_bn_histograms", "plot_correlation_matrices", "plot_dispersion_curves", "plot_eigenspectra",
    "plot_embedding", "plot_embedding_by_class", "plot_image_grid", "plot_layer_scores", "plot_loss_curves",
    "plot_loss_curves_by_source", "plot_mean_std_scatter", "plot_sda_matrix", "source_colors",
    "plot_diversity_vs_accuracy",
    "DIVERSITY_SIGN", "correlation_table", "rank_correlation", "study_reading", "study_rows",
    "within_group_correlation",
    "FIGURES", "diagnose", "load_accuracy",
]
