"""Generative data-free QAT: a conditional generator trained against the frozen FP model with GDFQ's or DSG's
losses, and a quantized student distilled from the FP model on the generated images (dsg-method.md §A.2, §C.2).

The generator objective reuses the terms of :mod:`dsg_viz.objectives` (CE, LSE, SCI) and adds the batch-statistic
alignment GDFQ's generator uses. Its presets sit side by side in :data:`GENERATOR_PRESETS`:

* ``gdfq``: ``CE + 0.1 · (1/L) Σ_l [mean_c (μ̂-μ)² + mean_c (v̂-v)²]`` on batch statistics (mean, biased
  variance) of the BN inputs against ``running_mean``/``running_var`` (GDFQ's released loss).
* ``dsg`` (the paper's intent, §G items 2, 4, 5, 6):
  ``CE + 0.1 · (1/L) Σ_l Σ_c ([|μ̂-μ|-δ]_+² + [|σ̂-σ|-γ]_+²)``
  (hinge SDA on batch mean and std, margins from the ε = 0.9 quantile of an N(0, 1) batch's deviations), plus the
  per-sample LSE term ``0.1/L · (w-1)/N Σ_j l^SDA_{a(j)}(x_j)`` with ``a(j) = j mod L``, ``w = 2`` (per-sample
  statistics, per-sample margins), plus differentiable SCI ("intended") weighted ``1/L``.
* ``dsg-official`` (the released QAT code, its defects included, §B.1, §B.2, §B.3): ``(|Δ| - m)²`` (the abs that
  turns the hinge into a target gap) on the batch mean and **variance**, LSE as weight 2 on *channel* ``l`` of
  layer ``l`` (no per-sample effect), SCI computed without gradient. The released margin files are not shipped;
  the ε = 0.9 noise-batch quantile (in variance units) stands in for them.

QAT (:func:`train_qat`), as GDFQ: each iteration samples ``z``, ``y``, takes one Adam step on the generator, then
(after ``warmup_epochs``) one SGD step on the student with ``α·T²·KL(teacher ‖ student at temperature T) + CE`` on
the detached images and teacher logits. The student is ``quantize(fp_model, QuantConfig.from_bits(bits))``
(straight-through estimator; per-channel weight ranges recomputed every forward; BN in eval mode, so running
statistics stay frozen); its activation ranges follow an EMA (β = 0.9) of each batch's min/max during the first
``act_warmup_epochs`` epochs and are frozen afterwards. The FP model is never modified.

Model selection is honest: every epoch is scored on a validation split (held-out train images, never test); the
final epoch and the best validation epoch are both evaluated on the test split at the end. Checkpoints are written
atomically after every epoch, ``resume=True`` continues bit-identically, and ``log.jsonl`` holds one line per epoch.
"""

from .config import KD_REDUCTIONS, QAT_PRESETS, QATConfig, qat_preset
from .loop import (_EMARange, _evaluate, _observe_ranges, _static_weights, export_generator_samples, kd_loss,
                   qat_cell, qat_splits, train_qat)
from .objectives import (GENERATOR_PRESETS, LSE_MODES, REDUCES, SCI_MODES, SDA_FORMS, STATS, BatchBNAlignment,
                         BatchSlackAlignment, GeneratorContext, GeneratorObjectiveConfig, batch_margins,
                         build_generator_objective, generator_margins, generator_preset)
from .state import CHECKPOINT, LOG, RESULT, load_generator

__all__ = ["KD_REDUCTIONS", "QAT_PRESETS", "QATConfig", "qat_preset", "export_generator_samples", "kd_loss",
           "qat_cell", "qat_splits", "train_qat", "GENERATOR_PRESETS", "LSE_MODES", "REDUCES", "SCI_MODES",
           "SDA_FORMS", "STATS", "BatchBNAlignment", "BatchSlackAlignment", "GeneratorContext",
           "GeneratorObjectiveConfig", "batch_margins", "build_generator_objective", "generator_margins",
           "generator_preset", "CHECKPOINT", "LOG", "RESULT", "load_generator",
           # internals the tests exercise
           "_EMARange", "_evaluate", "_observe_ranges", "_static_weights"]
