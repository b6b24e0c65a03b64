"""Calibration data from Python: paths as the command line takes them, or samples from
iterables and ONNX Runtime ``CalibrationDataReader`` objects, written one at a time to a
temporary folder the Rust side streams from (memory stays at one sample whatever the count)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Union, cast

import numpy as np

from .errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]


def is_path(value: Any) -> bool:
    return isinstance(value, (str, bytes, os.PathLike))


def _samples(source: Any) -> Iterator[Any]:
    """The samples of ``source``: a ``CalibrationDataReader`` (``get_next()`` until ``None``)
    or any iterable."""
    get_next = getattr(source, "get_next", None)
    if callable(get_next):
        while True:
            item = get_next()
            if item is None:
                return
            yield item
    elif isinstance(source, Mapping):
        raise UsageError(
            "calibration data: got one dict; give an iterable of dicts (one per sample), "
            "a CalibrationDataReader or a path"
        )
    else:
        try:
            it = iter(source)
        except TypeError:
            raise UsageError(
                f"calibration data: a path, an iterable of dict[str, ndarray] or of arrays, "
                f"or an object with get_next() (CalibrationDataReader), not {type(source).__name__}"
            ) from None
        yield from it


def _as_array(value: Any, where: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - reported with where it came from
        raise UsageError(f"calibration data, {where}: not an array ({e})") from None
    if a.dtype == object:
        raise UsageError(f"calibration data, {where}: not a numeric array (dtype object)")
    return np.ascontiguousarray(a)


def spool(
    source: Any, folder: str, max_samples: Optional[int] = None, progress: bool = False
) -> int:
    """Writes the samples of ``source`` to ``folder`` (``00000000.npz`` with one entry per
    input for dict samples, ``00000000.npy`` for arrays of a single-input model), reading at
    most ``max_samples``; returns how many were written. ``progress``: count them on stderr
    (a terminal only) while the iterable produces them."""
    n = 0
    kind = None
    shown = time.monotonic()
    progress = progress and sys.stderr.isatty()
    for item in _samples(source):
        if max_samples is not None and n >= max_samples:
            break
        if isinstance(item, Mapping):
            this = "dict"
            arrays: Dict[str, np.ndarray] = {}
            single: Optional[np.ndarray] = None
            for name, value in item.items():
                if not isinstance(name, str):
                    raise UsageError(
                        f"calibration data, sample {n}: input names must be strings, got {name!r}"
                    )
                arrays[name] = _as_array(value, f"sample {n}, input `{name}`")
            if not arrays:
                raise UsageError(f"calibration data, sample {n}: an empty dict")
        elif isinstance(item, (tuple, list)):
            raise UsageError(
                f"calibration data, sample {n}: a {type(item).__name__}; give a dict of input "
                "name -> array (or one array for a single-input model)"
            )
        else:
            this = "array"
            arrays = {}
            single = _as_array(item, f"sample {n}")
        if kind is not None and this != kind:
            raise UsageError(
                f"calibration data, sample {n}: a {this} after {kind}s; give one kind throughout"
            )
        kind = this
        path = os.path.join(folder, f"{n:08d}")
        if single is None:
            _savez(path + ".npz", arrays)
        else:
            np.save(path + ".npy", single)
        n += 1
        if progress and time.monotonic() - shown > 0.5:
            shown = time.monotonic()
            sys.stderr.write(f"\ronnx-quant: reading calibration samples from Python: {n}")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\r\033[K")
    if n == 0:
        raise UsageError("calibration data: the iterable or reader gave no samples")
    return n


def _savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """One ``.npz`` entry per input, uncompressed (streamed back entry by entry)."""
    np.savez(path, **cast(Dict[str, Any], arrays))


@contextlib.contextmanager
def calibration_path(
    source: Any, max_samples: Optional[int] = None, progress: bool = False
) -> Iterator[Optional[str]]:
    """A path the command line can read for ``source``: the path itself, or a temporary folder
    of its samples, removed afterwards (also on errors and Ctrl-C)."""
    if source is None:
        yield None
        return
    if is_path(source):
        yield os.fsdecode(source)
        return
    folder = tempfile.mkdtemp(prefix="onnx-quant-calib-")
    try:
        if isinstance(source, np.ndarray):
            # one array: read as a .npy file is (axis 0 stacks samples)
            np.save(os.path.join(folder, "samples.npy"), _as_array(source, "the array"))
        else:
            spool(source, folder, max_samples, progress)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
