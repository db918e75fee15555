"""Post-training quantization: fake-quantizers on core PyTorch ops, a switchable quantized copy of a model, and
activation calibration.

``qm = quantize(model, QuantConfig(w_bits=4, a_bits=4))`` → ``calibrate(qm, images)`` → ``evaluate(qm, split)``.
The full-precision model is never modified; ``qm.set_mode("fp" | "weight" | "full")`` switches quantization off,
to weights only, or on for weights and activations. Conventions: dsg-method.md §D and §G item 13;
``QuantConfig.describe()`` states the one in use in a line, for reports.
"""

from .calibrate import RangeObserver, calibrate
from .modules import QuantAct, QuantConv2d, QuantLinear
from .quantize import QuantConfig, QuantModel, describe, parse_bits, quantize
from .reconstruct import ReconstructionConfig, ReconstructionResult, reconstruct
from .quantizer import ActQuantizer, NotCalibratedError, WeightQuantizer, fake_quantize, round_ste, weight_range

__all__ = ["QuantConfig", "QuantModel", "quantize", "calibrate", "parse_bits", "describe", "ActQuantizer",
           "WeightQuantizer", "QuantConv2d", "QuantLinear", "QuantAct", "RangeObserver", "NotCalibratedError",
           "fake_quantize", "round_ste", "weight_range", "ReconstructionConfig", "ReconstructionResult", "reconstruct"]
