"""The one sample cache shared by ``make demo``, ``dsg-viz compare``, the notebooks and the widget panels.

A generated sample set is stored under a key that hashes everything its pixels depend on: the model name, the
checkpoint's SHA-256 (or, for a model built without a checkpoint, a hash of its weights), the **full**
:class:`~dsg_viz.generation.GenerationConfig` (``asdict``: preset name, every weight, the margin settings, steps,
batch size, sample count...), the precision it runs in on this device (``precision="auto"`` is fp32 or bf16
depending on the hardware), the seed and the package version. Real train images are keyed by the model, the
count, the seed, the data root and the version. So a renamed preset, a changed default or another checkpoint never
reuses an old file: it simply misses the cache. A file is also checked against the key's inputs when loaded.

Location: ``$DSG_VIZ_SAMPLE_CACHE`` if set, else ``runs/cache/`` of the dsg_viz checkout the current directory is in
(so ``make demo`` at the repository root and a notebook in ``notebooks/`` share it), else ``./runs/cache/``. Files are
``<dir>/<model>/<method>-n<N>-seed<S>-<key>.pt`` (:meth:`SampleSet.save <dsg_viz.generation.SampleSet.save>`
format), written atomically. Delete a file, or pass ``recompute=True``, to regenerate it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch.nn as nn

from .errors import ConfigError

CACHE_ENV = "DSG_VIZ_SAMPLE_CACHE"
KEY_FORMAT = 1  # bump when the meaning of a key changes

__all__ = ["CACHE_ENV", "CachedSamples", "default_cache_dir", "model_identity", "sample_key", "real_key",
           "cache_path", "get_or_generate"]


def default_cache_dir() -> Path:
    """Return the sample cache folder: ``$DSG_VIZ_SAMPLE_CACHE``, else ``runs/cache`` of the enclosing dsg_viz
    checkout (the first parent of the current directory holding ``pyproject.toml`` and ``dsg_viz/``), else
    ``./runs/cache``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd()
    for d in (cwd, *cwd.parents):
        if (d / "pyproject.toml").is_file() and (d / "dsg_viz" / "__init__.py").is_file():
            return d / "runs" / "cache"
    return cwd / "runs" / "cache"


def _weights_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "weights:" + h.hexdigest()


def model_identity(model: nn.Module) -> tuple[str, str]:
    """Return ``(model name, checkpoint identity)``: the SHA-256 of the checkpoint the model was built from
    (``model.checkpoint_sha256``, set by :func:`dsg_viz.create_model`), else ``"weights:<sha256>"`` of its state
    dict."""
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    sha = getattr(model, "checkpoint_sha256", None)
    return name, sha or _weights_hash(model)


def _digest(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _version() -> str:
    from . import __version__

    return __version__


def sample_key(model_name: str, checkpoint_sha256: str | None, cfg, num_samples: int | None = None, seed: int = 0,
               version: str | None = None, precision: str | None = None) -> str:
    """Return the cache key (20 hex digits) of a generated sample set: a hash of the model name, the checkpoint's
    SHA-256, ``asdict(cfg)`` (the full :class:`~dsg_viz.generation.GenerationConfig`, margins included), the sample
    count (``cfg.num_samples`` when ``None``), the seed, the package version (default: this one) and, if given, the
    precision ``precision="auto"`` resolves to on the generating device (``"fp32"`` / ``"bf16"``)."""
    n = cfg.num_samples if num_samples is None else num_samples
    payload = {"format": KEY_FORMAT, "kind": "generated", "model": model_name, "checkpoint_sha256": checkpoint_sha256,
               "config": asdict(cfg), "num_samples": int(n), "seed": int(seed), "version": version or _version()}
    if precision is not None:
        payload["resolved_precision"] = precision
    return _digest(payload)


def _data_identity(data_root: str | None) -> str:
    from .data import resolve_data_root

    return str(Path(resolve_data_root(data_root)).expanduser().resolve())


def real_key(model_name: str, num_samples: int, seed: int = 0, data_root: str | None = None,
             version: str | None = None) -> str:
    """Return the cache key of ``num_samples`` real train images drawn with ``seed`` for ``model_name`` (its input
    normalization) from the data root ``data_root`` (resolved as :func:`dsg_viz.data.resolve_data_root` does)."""
    return _digest({"format": KEY_FORMAT, "kind": "real", "model": model_name, "num_samples": int(num_samples),
                    "seed": int(seed), "data_root": _data_identity(data_root), "version": version or _version()})


def cache_path(key: str, method: str, num_samples: int, seed: int, model_name: str,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """Return ``<cache dir>/<model>/<method>-n<N>-seed<S>-<key>.pt``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe = "".join(c if c.isalnum() or c in "+-_." else "_" for c in method)
    return root / model_name / f"{safe}-n{num_samples}-seed{seed}-{key}.pt"


class CachedSamples(NamedTuple):
    """What :func:`get_or_generate` returns: the sample set, its cache file, and whether it was loaded from it."""

    samples: object
    path: Path
    loaded: bool


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _load_valid(path: Path, expect: dict):
    """Return the set at ``path`` if it is readable, complete and matches ``expect`` (its key's inputs), else None."""
    from .generation import SampleSet

    if not path.is_file():
        return None
    try:
        s = SampleSet.load(path)
    except Exception:  # noqa: BLE001 - a bad cache entry is regenerated
        return None
    if s.interrupted or len(s) != expect["num_samples"]:
        return None
    for k in ("method", "seed", "model", "version"):
        if getattr(s, k) != expect[k]:
            return None
    if "config" in expect and not _same(s.config, expect["config"]):
        return None
    return s


def get_or_generate(model: nn.Module, source, num_samples: int | None = None, seed: int = 0, *,
                    cache_dir: str | os.PathLike | None = None, recompute: bool = False,
                    data_root: str | None = None, checkpoint_sha256: str | None = None, progress: bool = True,
                    callback=None, **overrides) -> CachedSamples:
    """Return the sample set of ``source`` for ``model`` and ``seed`` from the cache, generating (and caching) it
    when missing.

    Args:
        model: the BN network (its name and checkpoint identity enter the key, see :func:`model_identity`).
        source: a preset name (deprecated names map to their replacement with a warning), ``"real"``, or a full
            :class:`~dsg_viz.generation.GenerationConfig`.
        num_samples: the sample count (required for a name; for a config it must be ``None`` or its own count).
        seed: the generation seed (for ``real``: the draw).
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        recompute: delete the cached file first and generate anew.
        data_root: the data root of ``real`` images.
        checkpoint_sha256: the checkpoint's SHA-256 if known (default: from the model, :func:`model_identity`).
        progress, callback: passed to :func:`~dsg_viz.generation.generate`.
        **overrides: :class:`~dsg_viz.generation.GenerationConfig` fields applied to the preset
            (:func:`~dsg_viz.generation.preset` rules: ``NOT_GIVEN`` keeps the preset's value).

    An interrupted generation is returned but not cached.
    """
    from .generation import GenerationConfig, generate, preset, real_samples, resolve_precision

    version = _version()
    name, ident = model_identity(model)
    if checkpoint_sha256:
        ident = checkpoint_sha256
    if isinstance(source, GenerationConfig):
        if overrides:
            raise ConfigError("pass overrides to dataclasses.replace, not together with a GenerationConfig")
        if num_samples is not None and num_samples != source.num_samples:
            raise ConfigError(f"num_samples {num_samples} differs from the config's {source.num_samples}")
        cfg = source
        cfg.validate()
    elif source == "real":
        if num_samples is None:
            raise ConfigError("num_samples is required for real samples")
        if overrides:
            raise ConfigError(f"real samples take no generation settings (got {', '.join(sorted(overrides))})")
        cfg = None
    else:
        if num_samples is None:
            raise ConfigError("num_samples is required with a preset name")
        cfg = preset(source, num_samples=num_samples, **overrides)
    if cfg is None:
        key = real_key(name, num_samples, seed, data_root, version)
        expect = {"method": "real", "num_samples": num_samples, "seed": seed, "model": name, "version": version}
        path = cache_path(key, "real", num_samples, seed, name, cache_dir)
    else:
        device = next(model.parameters()).device
        key = sample_key(name, ident, cfg, cfg.num_samples, seed, version, resolve_precision(cfg, device)[0])
        expect = {"method": cfg.method, "num_samples": cfg.num_samples, "seed": seed, "model": name,
                  "version": version, "config": asdict(cfg)}
        path = cache_path(key, cfg.method, cfg.num_samples, seed, name, cache_dir)
    if recompute:
        path.unlink(missing_ok=True)
    s = _load_valid(path, expect)
    if s is not None:
        return CachedSamples(s, path, True)
    if cfg is None:
        s = real_samples(name, num_samples, seed, data_root)
    else:
        sha = None if ident.startswith("weights:") else ident
        s = generate(model, cfg, seed=seed, progress=progress, checkpoint_sha256=sha, callback=callback)
    if not s.interrupted:
        s.save(path, grid=False)
    return CachedSamples(s, path, False)

