#!/usr/bin/env python3
"""Sharded calibration on Dask, end to end, on the shipped digits fixture.

    pip install ".[dask]"                       # from the repository root
    python python/examples/sharded_calibration.py [SCHEDULER_ADDRESS]

Without an address it starts a local cluster of two worker processes. The 128 calibration
samples are cut into 4 shards, each calibrated as a Dask task that loads its own part (a
function called on the worker); the statistics are merged exactly and the model quantized from
them, then checked against one run over all samples: the same bytes.
"""
import os
import sys
import tempfile

import numpy as np
from dask.distributed import Client, LocalCluster

import onnx_quant
from onnx_quant.distributed import quantize_sharded

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "fixtures", "digits", "digits_cnn.onnx")
CALIB = os.path.join(ROOT, "fixtures", "digits", "calib.npy")


def shard(k, of):
    """Shard k of `of`: a function the worker calls to read its own samples."""

    def samples():
        x = np.load(CALIB, mmap_mode="r")
        n = len(x)
        for i in range(k * n // of, (k + 1) * n // of):
            yield {"input": np.ascontiguousarray(x[i : i + 1])}

    return samples


def main():
    if len(sys.argv) > 1:
        client = Client(sys.argv[1])
    else:
        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None))
    with tempfile.TemporaryDirectory() as out:
        sharded = os.path.join(out, "sharded.onnx")
        report = quantize_sharded(client, MODEL, sharded, [shard(k, 4) for k in range(4)],
                                  stats=os.path.join(out, "all.json"), method="entropy", quiet=True)
        single = os.path.join(out, "single.onnx")
        onnx_quant.quantize(MODEL, single, calib=CALIB, method="entropy", quiet=True)
        same = open(sharded, "rb").read() == open(single, "rb").read()
        print(f"{report.samples} samples in 4 shards, {len(report.quantized_nodes)} nodes quantized; "
              f"same bytes as one run: {same}")
    client.close()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
