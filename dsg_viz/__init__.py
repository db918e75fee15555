"""dsg_viz: Diverse Sample Generation for data-free quantization, with diagnostics that show homogenization.

The pipeline reads in the module names: ``models`` → ``bn`` (statistics) → ``objectives`` / ``margins`` →
``generation`` (sample sets) → ``quant`` (quantize, calibrate) → ``evaluate``; and sample sets → ``diagnostics``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("dsg_viz")  # the installed distribution's version (pyproject.toml)
except PackageNotFoundError:  # pragma: no cover - a source tree on sys.path without an install
    __version__ = "0+unknown"
del PackageNotFoundError, _version

from .bn import bn_layers, bn_targets, capture_bn, per_sample_stats  # noqa: E402
from .data import load_split, resolve_data_root  # noqa: E402
from .errors import DsgVizError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .generation import PRESETS, GenerationConfig, SampleSet, generate, make_samples, preset  # noqa: E402
from .models import create_model, get_spec, list_models  # noqa: E402
from .quant import QuantConfig, calibrate, quantize  # noqa: E402

__all__ = ["__version__", "bn_layers", "bn_targets", "capture_bn", "per_sample_stats", "load_split",
           "resolve_data_root", "DsgVizError", "evaluate", "PRESETS", "GenerationConfig", "SampleSet", "generate",
           "make_samples", "preset", "create_model", "get_spec", "list_models", "QuantConfig", "calibrate",
           "quantize"]
