"""Exceptions of the Python API: one class per exit code of the ``onnx-quant`` command."""

from __future__ import annotations

from typing import Dict, Type

__all__ = [
    "OnnxQuantError",
    "InternalError",
    "UsageError",
    "ModelError",
    "CalibrationError",
    "OutputError",
    "CheckFailed",
    "AccuracyMissed",
    "Interrupted",
    "NotSupportedError",
]


class OnnxQuantError(Exception):
    """An onnx-quant job failed. ``exit_code`` is the code the command line exits with for the
    same failure (docs/user-guide.md lists them), ``category`` its name, ``message`` the text
    the command line prints after ``error:``."""

    exit_code: int = 1
    category: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InternalError(OnnxQuantError):
    """A bug in onnx-quant (exit code 1)."""

    exit_code = 1
    category = "internal"


class UsageError(OnnxQuantError, ValueError):
    """Bad arguments or settings, found before any work is done (exit code 2)."""

    exit_code = 2
    category = "usage"


class NotSupportedError(UsageError):
    """An argument of ONNX Runtime's ``quantize_static`` that onnx-quant has no equivalent for
    (exit code 2): raised rather than ignored."""


class ModelError(OnnxQuantError):
    """The model cannot be read, is invalid or uses what onnx-quant or tract cannot handle
    (exit code 3)."""

    exit_code = 3
    category = "model"


class CalibrationError(OnnxQuantError):
    """Calibration data missing, unreadable, mis-shaped or non-finite (exit code 4)."""

    exit_code = 4
    category = "calibration"


class OutputError(OnnxQuantError):
    """An output cannot be written (exit code 5); nothing was half-written."""

    exit_code = 5
    category = "output"


class CheckFailed(OnnxQuantError):
    """``check`` found violations of the target's rules (exit code 6)."""

    exit_code = 6
    category = "check-failed"


class AccuracyMissed(OnnxQuantError):
    """An accuracy gate (``min_sqnr``, ``max_top1_drop``) was missed (exit code 7)."""

    exit_code = 7
    category = "accuracy-missed"


class Interrupted(OnnxQuantError):
    """The job was cancelled (exit code 130); temporary files were removed."""

    exit_code = 130
    category = "interrupted"


_BY_CODE: Dict[int, Type[OnnxQuantError]] = {
    c.exit_code: c
    for c in (
        InternalError,
        UsageError,
        ModelError,
        CalibrationError,
        OutputError,
        CheckFailed,
        AccuracyMissed,
        Interrupted,
    )
}


def from_exit_code(code: int, message: str) -> OnnxQuantError:
    """The exception for a command that exited with ``code``."""
    return _BY_CODE.get(code, InternalError)(message)
