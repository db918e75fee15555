"""What the hardware can do fast: native bf16 matrix units decide the generation precision (``precision="auto"``).

On CPUs with AMX-BF16 tiles and on CUDA GPUs, bf16 convolutions run natively and roughly halve a ResNet's
forward+backward. AVX512-BF16 alone (no tiles) is not enough: with oneDNN limited to it, the same step was measured
1.2x *slower* in bf16 than in fp32, and on AVX2-only CPUs, where oneDNN emulates bf16, 12x slower
(docs/benchmarks.md "Generation speed"). :func:`native_bf16` answers the question with a reason string;
:func:`cpu_info` is what every benchmark JSON records about the machine.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess

import torch

__all__ = ["native_bf16", "cpu_flags", "cpu_info"]

# flags that matter for the precision choice, as /proc/cpuinfo spells them
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Return the CPU's feature flags (``/proc/cpuinfo`` spelling), from ``torch.cpu.get_capabilities()`` where
    this PyTorch has it, else ``/proc/cpuinfo``; empty when neither answers."""
    flags: set[str] = set()
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        try:
            c = caps()
            names = {"avx2": "avx2", "avx512_f": "avx512f", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16",
                     "amx_tile": "amx_tile"}
            flags |= {ours for theirs, ours in names.items() if c.get(theirs)}
        except Exception:  # noqa: BLE001 - fall back to /proc/cpuinfo
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags |= set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return frozenset(flags)


def _onednn_isa_limit() -> str | None:
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return isa.strip().lower() if isa else None


def native_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Return ``(True, reason)`` if ``device`` runs bf16 convolutions natively and faster than fp32, else
    ``(False, reason)``.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: AMX-BF16 in the CPU flags (:func:`cpu_flags`),
    oneDNN available, and no ``ONEDNN_MAX_CPU_ISA`` limit below AMX. AVX512-BF16 without AMX: no (measured slower
    than fp32). Anything else: no.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older PyTorch without the keyword
            ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA"
        return ok, f"{name}: native bf16 {'supported' if ok else 'not supported (pre-Ampere)'}"
    if device.type != "cpu":
        return False, f"{device.type}: bf16 speed not established here, fp32"
    flags = cpu_flags()
    cap = torch.backends.cpu.get_cpu_capability()
    if "amx_bf16" not in flags:
        if "avx512_bf16" in flags:
            return False, (f"CPU has AVX512-BF16 but no AMX-BF16 (PyTorch CPU capability {cap}): bf16 measured 1.2x "
                           "slower than fp32 there")
        return False, (f"CPU without AMX-BF16 (PyTorch CPU capability {cap}): bf16 would be emulated (measured 12x "
                       "slower on AVX2)")
    if not torch.backends.mkldnn.is_available():
        return False, "CPU has AMX-BF16 but this PyTorch has no oneDNN (mkldnn) for bf16 convolutions"
    isa = _onednn_isa_limit()
    if isa is not None and "amx" not in isa and isa not in ("all", "default"):
        return False, f"CPU has AMX-BF16 but ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN off the AMX tiles"
    return True, f"CPU has AMX-BF16 (PyTorch CPU capability {cap})"


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - no lscpu (macOS, containers)
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict:
    """Return what a benchmark records about the machine: CPU model (``lscpu``), cores, the relevant flags
    (:data:`RELEVANT_FLAGS`), PyTorch's CPU capability and version, oneDNN ISA limit, native bf16 and why."""
    flags = cpu_flags()
    ok, why = native_bf16("cpu")
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "flags": {f: f in flags for f in RELEVANT_FLAGS},
            "torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": _onednn_isa_limit(), "native_bf16": ok, "native_bf16_reason": why}
