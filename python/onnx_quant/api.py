"""The Python API: each function runs the command of the same name in this process (the same
code, checks and messages as the ``onnx-quant`` command line; the GIL released while it works)
and returns its JSON report as Python objects.

Every flag of the command is also a keyword argument, ``-`` written ``_``: ``--per-tensor`` is
``per_tensor=True``, ``--weight-type int4`` is ``weight_type="int4"``, a list repeats the flag
(``input_shape=["x:1,3,224,224"]``). ``False`` and ``None`` leave a flag out, as on the command
line; an unknown keyword is a :class:`~onnx_quant.errors.UsageError`, never ignored. Settings of
the YAML file (overrides included) come through ``config=``: a path, or the same content as a
``dict``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import _native
from ._data import PathLike, calibration_path
from .errors import UsageError, from_exit_code

__all__ = [
    "run",
    "quantize",
    "calibrate",
    "merge_stats",
    "eval",
    "check",
    "explain",
    "Report",
    "Stats",
    "EvalResult",
    "CheckResult",
    "Explanation",
    "NodeFate",
]

Config = Union[None, PathLike, Mapping[str, Any]]


def run(*argv: Union[str, "os.PathLike[str]"]) -> None:
    """Runs ``onnx-quant ARGV...`` in this process, e.g. ``run("check", "m.onnx")``.

    Raises the :mod:`onnx_quant.errors` exception of the command's exit code; ``KeyboardInterrupt``
    on Ctrl-C once the job has stopped and removed its temporary files."""
    args = [os.fspath(a) for a in argv]
    code, message = _native.run(args)
    if code != 0:
        unknown = re.search(r"unexpected argument '--([a-z0-9-]+)'", message)
        if unknown:
            keyword = unknown.group(1).replace("-", "_")
            message = (
                f"no setting `{keyword}` (flag --{unknown.group(1)}): keyword arguments are the "
                f"command's flags, `onnx-quant {args[0]} --help` lists them\n\n{message}"
            )
        raise from_exit_code(code, message)
    if message:
        # --help, --version
        print(message, end="")


def _flag_args(flags: Mapping[str, Any]) -> List[str]:
    out: List[str] = []
    for key, value in flags.items():
        name = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(name)
        elif isinstance(value, (list, tuple)):
            for v in value:
                out += [name, _text(v)]
        else:
            out += [name, _text(value)]
    return out


def _text(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.contextmanager
def _config_path(config: Config, scratch: str) -> Iterator[Optional[str]]:
    if config is None:
        yield None
    elif isinstance(config, Mapping):
        # JSON is YAML: the settings file reader checks it as it checks a file
        path = os.path.join(scratch, "settings.yaml")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
        yield path
    else:
        yield os.fspath(config)


def _common(
    target: Optional[str], method: Optional[str], config_path: Optional[str], quiet: bool
) -> List[str]:
    args: List[str] = []
    if target is not None:
        args += ["--target", target]
    if method is not None:
        args += ["--method", method]
    if config_path is not None:
        args += ["--config", config_path]
    if quiet:
        args.append("--quiet")
    return args


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@dataclass
class Report:
    """What ``quantize`` did: the JSON report (``--report``) as Python objects. ``data`` holds
    all of it; the fields below are its most used parts."""

    output: str
    #: names of the quantized nodes, in graph order
    quantized_nodes: List[str]
    #: every node left float, with why
    float_nodes: Dict[str, str]
    #: one entry per quantized activation: tensor, range, dtype, scale, zero_point, sqnr_db, ...
    activations: List[Dict[str, Any]]
    #: one entry per quantized weight: name, dims, dtype, axis, ...
    weights: List[Dict[str, Any]]
    #: calibration samples used (0 without calibration)
    samples: int
    warnings: List[str]
    notes: List[str]
    data: Dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Report":
        nodes = data.get("nodes", [])
        return cls(
            output=data["output"]["path"],
            quantized_nodes=[n["name"] for n in nodes if n.get("quantized")],
            float_nodes={n["name"]: n.get("reason") or "" for n in nodes if not n.get("quantized")},
            activations=data.get("activations", []),
            weights=data.get("weights", []),
            samples=(data.get("calibration") or {}).get("samples", 0),
            warnings=data.get("warnings", []),
            notes=data.get("notes", []),
            data=data,
        )


def quantize(
    model: PathLike,
    output: PathLike,
    calib: Any = None,
    *,
    stats: Optional[PathLike] = None,
    target: Optional[str] = None,
    method: Optional[str] = None,
    config: Config = None,
    max_samples: Optional[int] = None,
    quiet: bool = False,
    **flags: Any,
) -> Report:
    """Quantizes ``model`` into ``output``, as ``onnx-quant quantize`` does.

    ``calib``: a path (file or folder, as ``--calib``), an iterable of ``dict[str, ndarray]``
    (input name -> array) or of arrays (a single-input model), one array stacking samples on
    axis 0 (as a ``.npy`` holds them), or an object with ONNX Runtime's
    ``CalibrationDataReader`` protocol (``get_next()`` returning a dict, then ``None``). Samples
    are read one at a time (memory does not grow with their number); at most ``max_samples``.
    ``stats``: a statistics file from :func:`calibrate` / :func:`merge_stats` instead.
    ``target``: ``"tensorrt"`` (default), ``"ort"`` or ``"openvino"``. ``method``: ``"mse"``,
    ``"minmax"``, ``"percentile"`` or ``"entropy"``. ``quiet``: no progress bar or summary.
    Any other flag of ``onnx-quant quantize`` as a keyword (module docstring)."""
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        report = flags.pop("report", None)
        report_path = os.fspath(report) if report else os.path.join(scratch, "report.json")
        with calibration_path(calib, max_samples, not quiet) as calib_path, _config_path(
            config, scratch
        ) as config_path:
            args = ["quantize", os.fspath(model), os.fspath(output)]
            if calib_path is not None:
                args += ["--calib", calib_path]
            if stats is not None:
                args += ["--stats", os.fspath(stats)]
            if max_samples is not None:
                args += ["--max-samples", str(max_samples)]
            args += _common(target, method, config_path, quiet)
            args += ["--report", report_path] + _flag_args(flags)
            run(*args)
        return Report.from_json(_read_json(report_path))


@dataclass
class Stats:
    """A statistics file (``calibrate``, ``merge_stats``): where it is and what it holds."""

    path: str
    samples: int
    #: names of the tensors it has statistics of
    tensors: List[str]
    #: SHA-256 of the model file it was measured on
    model_sha256: str

    @classmethod
    def load(cls, path: PathLike) -> "Stats":
        data = _read_json(os.fspath(path))
        tensors = data.get("tensors", {})
        names = list(tensors) if isinstance(tensors, dict) else [t.get("name") for t in tensors]
        return cls(
            path=os.fspath(path),
            samples=int(data.get("samples", 0)),
            tensors=names,
            model_sha256=data.get("model_sha256", data.get("model", "")),
        )


def calibrate(
    model: PathLike,
    stats: PathLike,
    calib: Any,
    *,
    target: Optional[str] = None,
    method: Optional[str] = None,
    config: Config = None,
    max_samples: Optional[int] = None,
    quiet: bool = False,
    **flags: Any,
) -> Stats:
    """Runs ``model`` over ``calib`` (any form :func:`quantize` takes) and writes the statistics
    of the tensors the placement quantizes to ``stats``, as ``onnx-quant calibrate`` does.
    Statistics of disjoint shards merge exactly (:func:`merge_stats`)."""
    if calib is None:
        raise UsageError("calibrate: give calib= (a path, an iterable of samples or a reader)")
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        with calibration_path(calib, max_samples, not quiet) as calib_path, _config_path(
            config, scratch
        ) as config_path:
            assert calib_path is not None
            args = ["calibrate", os.fspath(model), "--calib", calib_path, "--stats", os.fspath(stats)]
            if max_samples is not None:
                args += ["--max-samples", str(max_samples)]
            args += _common(target, method, config_path, quiet) + _flag_args(flags)
            run(*args)
    return Stats.load(stats)


def merge_stats(inputs: Sequence[PathLike], output: PathLike, *, quiet: bool = False) -> Stats:
    """Merges statistics files of one model measured on disjoint samples into ``output``: the
    result equals one run over all of them (min/max and histograms exactly)."""
    paths = [os.fspath(p) for p in inputs]
    if len(paths) == 1:
        raise UsageError("merge_stats: give at least two statistics files")
    run("merge-stats", *paths, "-o", os.fspath(output), *(["--quiet"] if quiet else []))
    return Stats.load(output)


@dataclass
class EvalResult:
    """``eval``'s JSON: each output's SQNR, cosine, max error and top-1 agreement, accuracy with
    labels, the error of every quantized tensor with ``per_layer``."""

    samples: int
    #: one entry per output: name, sqnr_db, cosine, max_abs_error, top1_agreement, ...
    outputs: List[Dict[str, Any]]
    #: fp32_top1, quantized_top1, top1_drop (with labels)
    labels: Optional[Dict[str, Any]]
    data: Dict[str, Any] = field(repr=False)

    @property
    def sqnr_db(self) -> Dict[str, float]:
        """Each output's SQNR in dB."""
        return {o["name"]: o["sqnr_db"] for o in self.outputs}


def eval(  # noqa: A001 - the command's name
    reference: PathLike,
    quantized: PathLike,
    data: Any,
    *,
    labels: Optional[PathLike] = None,
    max_samples: Optional[int] = None,
    quiet: bool = True,
    **flags: Any,
) -> EvalResult:
    """Compares ``quantized`` with its float ``reference`` on ``data`` (any form :func:`quantize`
    takes for ``calib``), as ``onnx-quant eval`` does. ``min_sqnr=`` / ``max_top1_drop=`` raise
    :class:`~onnx_quant.errors.AccuracyMissed` when missed. ``quiet=False`` prints the table."""
    if data is None:
        raise UsageError("eval: give data= (a path, an iterable of samples or a reader)")
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        path = os.path.join(scratch, "eval.json")
        with calibration_path(data, max_samples) as data_path:
            assert data_path is not None
            args = ["eval", os.fspath(reference), os.fspath(quantized), "--data", data_path]
            if labels is not None:
                args += ["--labels", os.fspath(labels)]
            if max_samples is not None:
                args += ["--max-samples", str(max_samples)]
            if quiet:
                args.append("--quiet")
            args += ["--json", path] + _flag_args(flags)
            with _stdout_silenced(quiet):
                run(*args)
        d = _read_json(path)
    return EvalResult(
        samples=d.get("samples", 0), outputs=d.get("outputs", []), labels=d.get("labels"), data=d
    )


@dataclass
class CheckResult:
    """``check``'s findings for one target: each violation and warning has ``rule``, ``node``
    and ``message``."""

    target: str
    violations: List[Dict[str, Any]]
    warnings: List[Dict[str, Any]]
    notes: List[str]
    quantize_nodes: int
    dequantize_nodes: int
    data: Dict[str, Any] = field(repr=False)

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations


def check(model: PathLike, target: str = "tensorrt", *, quiet: bool = True) -> CheckResult:
    """What ``target``'s runtime refuses (violations) or cannot fuse (warnings) in the QDQ model
    ``model`` (from any tool), as ``onnx-quant check`` finds it. Violations do not raise: look at
    ``.ok`` / ``.violations``."""
    from .errors import CheckFailed

    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        path = os.path.join(scratch, "check.json")
        try:
            with _stdout_silenced(quiet):
                run("check", os.fspath(model), "--target", target, "--json", path)
        except CheckFailed:
            pass
        d = _read_json(path)
    return CheckResult(
        target=d["target"],
        violations=d.get("violations", []),
        warnings=d.get("warnings", []),
        notes=d.get("notes", []),
        quantize_nodes=d.get("quantize_nodes", 0),
        dequantize_nodes=d.get("dequantize_nodes", 0),
        data=d,
    )


@dataclass
class NodeFate:
    """One node in ``explain``: quantized or float, why, and a line per quantized tensor it
    reads, weight, bias or output, each naming the setting and where it came from."""

    name: str
    op_type: str
    quantized: bool
    reason: str
    details: List[str]
    #: "" for the main graph, else the subgraph's label
    graph: str = ""


@dataclass
class Explanation:
    """``explain``: every node's fate without calibration data."""

    nodes: List[NodeFate]
    subgraphs: List[Dict[str, Any]]
    notes: List[str]

    @property
    def quantized(self) -> List[str]:
        return [n.name for n in self.nodes if n.quantized]


def explain(
    model: PathLike,
    *,
    target: Optional[str] = None,
    method: Optional[str] = None,
    config: Config = None,
    quiet: bool = True,
    **flags: Any,
) -> Explanation:
    """What ``quantize`` would do to each node of ``model`` with these settings, and which
    preset rule, setting or override decided it, as ``onnx-quant explain`` says."""
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        path = os.path.join(scratch, "explain.json")
        with _config_path(config, scratch) as config_path:
            args = ["explain", os.fspath(model)] + _common(target, method, config_path, False)
            args += ["--json", path] + _flag_args(flags)
            with _stdout_silenced(quiet):
                run(*args)
        d = _read_json(path)
    return Explanation(
        nodes=[NodeFate(**n) for n in d.get("nodes", [])],
        subgraphs=d.get("subgraphs", []),
        notes=[note for _, note in d.get("notes", [])],
    )


@contextlib.contextmanager
def _stdout_silenced(quiet: bool) -> Iterator[None]:
    """The Rust side prints to file descriptor 1; ``quiet`` points it at /dev/null meanwhile."""
    if not quiet:
        yield
        return
    import sys

    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001
        pass
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
