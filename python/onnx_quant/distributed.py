"""Sharded calibration on a Dask cluster: each shard of the calibration data is calibrated as a
Dask task (``onnx-quant calibrate`` on a worker), the statistics come back to the caller and
merge exactly (:func:`onnx_quant.merge_stats`): the result equals one run over all the data,
min/max and histograms bit for bit. docs/scaling.md shows it on a cluster.

>>> from dask.distributed import Client
>>> client = Client("scheduler:8786")          # or Client() for a local cluster
>>> shards = [f"s3-mounted/calib/part{i}/" for i in range(8)]
>>> quantize_sharded(client, "model.onnx", "model.int8.onnx", shards, method="entropy")

Needs ``pip install onnx-quant[dask]`` where the tasks run and where they are submitted.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .api import Config, Report, Stats, calibrate, merge_stats, quantize
from .errors import UsageError

__all__ = ["calibrate_sharded", "quantize_sharded"]

#: A shard: a path the workers can read, an iterable or reader (sent to the worker), or a
#: function of no argument returning one (called on the worker: it loads its own part).
Shard = Union[str, "os.PathLike[str]", Callable[[], Any], Any]


def _calibrate_shard(
    model: Union[bytes, str], shard: Shard, settings: Dict[str, Any]
) -> bytes:
    """One task: calibrate ``shard`` on this worker; the statistics file's bytes."""
    with tempfile.TemporaryDirectory(prefix="onnx-quant-shard-") as scratch:
        if isinstance(model, bytes):
            path = os.path.join(scratch, "model.onnx")
            with open(path, "wb") as f:
                f.write(model)
        else:
            path = model
        data = shard() if callable(shard) and not hasattr(shard, "get_next") else shard
        out = os.path.join(scratch, "stats.json")
        calibrate(path, out, data, quiet=True, **settings)
        with open(out, "rb") as f:
            return f.read()


def calibrate_sharded(
    client: Any,
    model: Union[str, "os.PathLike[str]"],
    shards: Sequence[Shard],
    stats: Union[str, "os.PathLike[str]"],
    *,
    ship_model: bool = True,
    target: Optional[str] = None,
    method: Optional[str] = None,
    config: Config = None,
    threads: Optional[int] = None,
    quiet: bool = False,
    **flags: Any,
) -> Stats:
    """Calibrates ``model`` over each of ``shards`` as a task of the Dask ``client`` and
    writes their merged statistics to ``stats``.

    ``ship_model``: send the model file's bytes to the workers (no shared storage needed; the
    statistics still record the file's SHA-256); ``False`` when the workers read ``model``'s
    path themselves (models with external data). ``threads``: calibration threads per task
    (default: the worker's CPUs). Other keywords are ``calibrate``'s; a ``config`` dict is sent
    as is, a config path must be readable by the workers."""
    if len(shards) == 0:
        raise UsageError("calibrate_sharded: no shards")
    model_ref: Union[bytes, str]
    if ship_model:
        with open(model, "rb") as f:
            model_ref = f.read()
    else:
        model_ref = os.fspath(model)
    settings: Dict[str, Any] = dict(flags, target=target, method=method, config=config)
    if threads is not None:
        settings["threads"] = threads
    # a fresh key per call (hash=False): a key shared with an earlier, released scatter can be
    # lost while tasks wait for it
    model_future = (
        client.scatter(model_ref, broadcast=True, hash=False) if ship_model else model_ref
    )
    futures = [
        client.submit(_calibrate_shard, model_future, shard, settings, pure=False)
        for shard in shards
    ]
    parts: List[bytes] = client.gather(futures)
    with tempfile.TemporaryDirectory(prefix="onnx-quant-shards-") as scratch:
        files = []
        for i, data in enumerate(parts):
            path = os.path.join(scratch, f"shard{i:04d}.json")
            with open(path, "wb") as f:
                f.write(data)
            files.append(path)
        if len(files) == 1:
            with open(stats, "wb") as f:
                f.write(parts[0])
            return Stats.load(stats)
        return merge_stats(files, stats, quiet=quiet)


def quantize_sharded(
    client: Any,
    model: Union[str, "os.PathLike[str]"],
    output: Union[str, "os.PathLike[str]"],
    shards: Sequence[Shard],
    *,
    stats: Optional[Union[str, "os.PathLike[str]"]] = None,
    ship_model: bool = True,
    target: Optional[str] = None,
    method: Optional[str] = None,
    config: Config = None,
    threads: Optional[int] = None,
    quiet: bool = False,
    **flags: Any,
) -> Report:
    """:func:`calibrate_sharded`, then :func:`onnx_quant.quantize` from the merged statistics
    (kept in ``stats`` when given). The model equals the one a single run over all shards
    writes, byte for byte; ``equalize=True`` equalizes the model the shards measure too."""
    with tempfile.TemporaryDirectory(prefix="onnx-quant-") as scratch:
        path = os.fspath(stats) if stats is not None else os.path.join(scratch, "stats.json")
        # equalization changes the activations: the shards measure the model equalized as the
        # quantize run will equalize it (a statistics file records which it measured)
        prepare = {k: flags[k] for k in ("equalize",) if k in flags}
        calibrate_sharded(
            client,
            model,
            shards,
            path,
            ship_model=ship_model,
            target=target,
            method=method,
            config=config,
            threads=threads,
            quiet=quiet,
            **prepare,
        )
        return quantize(
            model,
            output,
            stats=path,
            target=target,
            method=method,
            config=config,
            quiet=quiet,
            **flags,
        )
