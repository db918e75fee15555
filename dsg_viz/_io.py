"""One way to write and read files: atomic writes, the safe loader, and output checks made before any work.

* **Atomic writes** (:func:`atomic_path`, :func:`write_text`, :func:`write_bytes`, :func:`save`,
  :func:`save_figure`, :func:`link`): the data goes to a hidden temporary file beside the destination, which is then
  renamed over it (``os.replace``), so a reader, or a run stopped half-way, never sees half a file. Parent folders are
  created. Under ``torchrun`` the callers write on rank 0 only (:mod:`dsg_viz.distributed`).
* **Safe loading** (:func:`load`): every ``.pt`` file dsg_viz reads (sample sets, margins, QAT checkpoints, model
  checkpoints) is read with ``torch.load(weights_only=True)``: tensors and plain containers (dict, list, tuple, str,
  numbers, ``None``) only. dsg_viz saves nothing else, so no project class needs
  ``torch.serialization.add_safe_globals``; a file holding any other Python object is refused with a clear error,
  because unpickling it could run code.
* **Output checks** (:func:`check_output_file`, :func:`check_output_dir`): a command checks that its output can be
  written *before* minutes of work, not after.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Iterator

import torch

from .errors import ConfigError, DataError

__all__ = ["atomic_path", "write_text", "write_bytes", "save", "save_figure", "link", "load", "load_npy", "load_npz",
           "UnsafeFileError", "check_output_file", "check_output_dir"]


def _tmp_name(path: Path) -> Path:
    # hidden, per process, same suffix (writers such as savefig pick the format from it)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parent folders created); when the block finishes, rename it over
    ``path``; when it raises, remove it and leave ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; return the path. ``obj`` should hold only tensors and plain
    containers, so that :func:`load` (``weights_only=True``) reads it back."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)`` atomically; return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def link(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` a hard link to ``src`` (a copy where links are impossible), replacing it atomically."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return Path(dst)


class UnsafeFileError(DataError):
    """A file holds Python objects other than tensors and plain containers; loading it could run code."""


def load(path: str | os.PathLike, what: str = "file", hint: str = "", error: type[Exception] = DataError):
    """Return the contents of the PyTorch file ``path``, read on the CPU with ``torch.load(weights_only=True)``.

    A missing, truncated or non-PyTorch file raises ``error`` (default :class:`DataError`); a file that holds any
    Python object besides tensors and plain containers raises :class:`UnsafeFileError` (loading it could run
    code). ``what`` names the file in the message (e.g. ``"sample file"``); ``hint`` says how to fix it."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"{what} {str(path)!r} does not exist{tail}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e).lower()
        if any(k in msg for k in ("global", "can only build", "can only create", "allowlist")):  # a refused object
            raise UnsafeFileError(
                f"{what} {str(path)!r} holds Python objects other than tensors and plain containers; refusing to load "
                f"it (unpickling it could run code){tail}") from None
        raise error(f"{what} {str(path)!r} is not a readable PyTorch file (UnpicklingError){tail}") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, foreign format, empty file...
        raise error(f"{what} {str(path)!r} is not a readable PyTorch file ({type(e).__name__}){tail}") from None


# what a pickled NumPy object array (ragged per-layer margins, the official DSG m.npy/n.npy) may contain
_NUMPY_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                  ("numpy._core.multiarray", "scalar")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"weights only: global {module}.{name} is not allowed")


def _read_npy(data: bytes, what: str, path: Path):
    import io

    import numpy as np

    fmt = np.lib.format
    f = io.BytesIO(data)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            _, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            _, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if not dtype.hasobject:
            f.seek(0)
            return fmt.read_array(f, allow_pickle=False)
        arr = _NumpyOnlyUnpickler(f).load()  # numbers and arrays only: no other global can be reached
    except pickle.UnpicklingError:
        raise UnsafeFileError(f"{what} {str(path)!r} holds Python objects other than numbers and arrays; refusing to "
                              "load it (unpickling it could run code)") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{what} {str(path)!r} is not a readable .npy array ({type(e).__name__})") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} {str(path)!r} does not hold an array")
    return arr


def load_npy(path: str | os.PathLike, what: str = "array file"):
    """Return the array in the ``.npy`` file ``path``. Object arrays (e.g. ragged per-layer values) are read with an
    unpickler that admits NumPy arrays and scalars only, so the file cannot run code (``np.load(allow_pickle=True)``
    could); anything else raises :class:`UnsafeFileError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist")
    return _read_npy(path.read_bytes(), what, path)


def load_npz(path: str | os.PathLike, what: str = "array file") -> dict:
    """Return ``{name: array}`` of the ``.npz`` file ``path``, each member read as :func:`load_npy` does."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            members = {n[:-4] if n.endswith(".npy") else n: z.read(n) for n in z.namelist()}
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{what} {str(path)!r} is not a readable .npz file ({type(e).__name__})") from None
    return {k: _read_npy(v, what, path) for k, v in members.items()}


def _probe(folder: Path, option: str, target: Path) -> None:
    """Create and remove a file in ``folder``; an error names ``option`` and ``target``."""
    probe = folder / f".dsg_viz_write_test{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise ConfigError(f"{option} {str(target)!r}: cannot write in {str(folder)!r} ({e.strerror or type(e).__name__}"
                          "); choose a writable location") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _make_dir(folder: Path, option: str, target: Path) -> None:
    for p in (folder, *folder.parents):  # the first existing ancestor must be a folder
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{option} {str(target)!r}: {str(p)!r} is a file, not a folder; choose another path")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{option} {str(target)!r}: cannot create folder {str(folder)!r} "
                          f"({e.strerror or type(e).__name__}); choose a writable location") from None


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder ``path`` if needed and check that files can be written in it; return it.

    Raises :class:`ConfigError` (naming ``option``) when ``path`` is a file, sits under a file, or is not
    writable (e.g. under ``/proc``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a file; give a folder (results are written into it)")
    _make_dir(path, option, path)
    _probe(path, option, path)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out", suffix: str | None = None,
                      forbid: tuple[str, ...] = ()) -> Path:
    """Check that the file ``path`` can be written (its folder is created if needed); return it.

    Raises :class:`ConfigError` (naming ``option``) when ``path`` is a folder, its parent is a file or not
    writable, its suffix is not ``suffix`` (when given), or it is one of ``forbid`` (files the command writes
    beside it)."""
    raw, path = str(path), Path(path)
    if path.is_dir() or raw.endswith(("/", os.sep)):
        raise ConfigError(f"{option} {str(path)!r} is a folder; give a file name such as "
                          f"{str(path / ('samples' + (suffix or '')))!r}")
    if suffix is not None and path.suffix.lower() != suffix:
        raise ConfigError(f"{option} {str(path)!r} must end in {suffix} (got {path.suffix or 'no suffix'!r})")
    for f in forbid:
        if Path(f) == path:
            raise ConfigError(f"{option} {str(path)!r} would be overwritten by a file the command writes beside it; "
                              "choose another name")
    _make_dir(path.parent, option, path)
    _probe(path.parent, option, path)
    return path
