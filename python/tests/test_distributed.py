"""Sharded calibration on Dask (a local cluster of worker processes): 4 shards merge into the
statistics of one run over all samples, exactly, and quantize to the same bytes."""

import json

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")

import onnx_quant as oq
from onnx_quant import errors
from onnx_quant.distributed import calibrate_sharded, quantize_sharded

from conftest import CALIB, MODEL


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def four_shards(x):
    """Samples 0-31, 32-63, 64-95, 96-127, each a list of batch-1 arrays."""
    return [[x[i : i + 1] for i in range(k * 32, (k + 1) * 32)] for k in range(4)]


def load_shard(k):
    """A shard the worker loads itself (a function: called on the worker)."""
    x = np.load(CALIB)
    return lambda: ({"input": x[i : i + 1]} for i in range(k * 32, (k + 1) * 32))


def test_four_shards_merge_into_exactly_one_runs_statistics(client, tmp_path, calib_array):
    merged = calibrate_sharded(client, MODEL, four_shards(calib_array), tmp_path / "merged.json")
    whole = oq.calibrate(MODEL, tmp_path / "whole.json", CALIB, quiet=True)
    assert merged.samples == whole.samples == 128
    a = json.loads((tmp_path / "merged.json").read_text())
    b = json.loads((tmp_path / "whole.json").read_text())
    assert a["model_sha256"] == b["model_sha256"]
    assert set(a["tensors"]) == set(b["tensors"])
    for name, stats in b["tensors"].items():
        # min/max, per-sample extremes and histograms: equal, not merely close
        assert a["tensors"][name] == stats, name
        assert any("hist" in k for k in stats), list(stats)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile", "mse"])
def test_quantizing_from_shards_writes_one_runs_bytes(client, tmp_path, calib_array, method):
    sharded = tmp_path / "sharded.onnx"
    quantize_sharded(client, MODEL, sharded, four_shards(calib_array), method=method, quiet=True)
    single = tmp_path / "single.onnx"
    oq.quantize(MODEL, single, calib=CALIB, method=method, quiet=True)
    assert sharded.read_bytes() == single.read_bytes()


def test_equalized_shards_write_one_equalized_runs_bytes(client, tmp_path, calib_array):
    sharded = tmp_path / "sharded.onnx"
    quantize_sharded(client, MODEL, sharded, four_shards(calib_array), equalize=True, quiet=True)
    single = tmp_path / "single.onnx"
    oq.quantize(MODEL, single, calib=CALIB, equalize=True, quiet=True)
    assert sharded.read_bytes() == single.read_bytes()


def test_shards_as_paths_and_as_functions_run_on_the_workers(client, tmp_path, calib_array):
    paths = []
    for k, shard in enumerate(four_shards(calib_array)):
        p = tmp_path / f"part{k}.npy"
        np.save(p, np.concatenate(shard))
        paths.append(str(p))
    by_path = calibrate_sharded(client, MODEL, paths, tmp_path / "p.json", ship_model=False)
    by_fn = calibrate_sharded(client, MODEL, [load_shard(k) for k in range(4)], tmp_path / "f.json")
    assert by_path.samples == by_fn.samples == 128
    assert (tmp_path / "p.json").read_bytes() == (tmp_path / "f.json").read_bytes()


def test_the_example_runs_on_a_local_cluster():
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, str(ROOT / "python" / "examples" / "sharded_calibration.py")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "same bytes as one run: True" in p.stdout
    assert "merged" not in p.stderr


def test_a_failing_shard_raises_its_error(client, tmp_path, calib_array):
    shards = four_shards(calib_array)
    shards[2] = [np.zeros((1, 1, 9, 9), np.float32)]
    with pytest.raises(errors.CalibrationError):
        calibrate_sharded(client, MODEL, shards, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()
