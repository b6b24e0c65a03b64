#!/usr/bin/env python3
"""What reading images costs: calibrating from PNG files against calibrating from the .npy
array they hold.

usage: python bench/images.py [--bin target/release/onnx-quant] [--peers ../shared/peers]
         [--work /tmp/onnx-quant-bench] [--n 128] [--repeat 3]

On the ResNet-18-shaped model and data of bench/calibration.py: each of the first N samples
(ImageNet-normalised [1,3,224,224]) is turned back into 8-bit RGB pixels and written as a PNG,
as it is and enlarged to 256 x 256 (nearest neighbour). `onnx-quant calibrate` then runs on the
array of those pixels, on the 224 x 224 PNG folder (decode and normalise: the statistics must
equal the array's) and on the 256 x 256 folder with the torchvision evaluation transform on
the command line (`--crop-ratio 0.875 --mean ... --std ...`: bilinear resize to 256, centre
224), with the same samples, threads and settings. Prints the medians of wall time and peak
RSS, and the largest difference of a tensor's range to the array's.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "fixtures", "digits"))
from calibration import ensure_data, measured  # noqa: E402
from make_images import png  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "onnx-quant"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--work", default="/tmp/onnx-quant-bench")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    a.samples, a.python = [a.n], sys.executable
    os.makedirs(a.work, exist_ok=True)
    model, calib = ensure_data(a, a.python)
    x = np.load(calib, mmap_mode="r")[: a.n]  # [n, 3, 224, 224]: batch-1 samples stacked
    pixels = np.clip(np.rint((x.transpose(0, 2, 3, 1) * STD + MEAN) * 255), 0, 255).astype(np.uint8)
    up = (np.arange(256) * 224) // 256  # nearest-neighbour enlargement to 256 x 256
    folders = {"png224": os.path.join(a.work, f"png224-{a.n}"), "png256": os.path.join(a.work, f"png256-{a.n}")}
    for d in folders.values():
        os.makedirs(d, exist_ok=True)
    for i, p in enumerate(pixels):
        for key, img in [("png224", p), ("png256", p[up][:, up])]:
            with open(os.path.join(folders[key], f"img_{i:04d}.png"), "wb") as f:
                f.write(png(np.ascontiguousarray(img)))
    # the same pixels as the array onnx-quant would otherwise be given
    arr = os.path.join(a.work, f"pixels{a.n}.npy")
    np.save(arr, ((pixels / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))
    norm = ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    cases = [(".npy array of the pixels", arr, []),
             ("PNG 224 x 224 (decode, normalise)", folders["png224"], norm),
             ("PNG 256 x 256 (decode, resize to 256, centre 224, normalise)", folders["png256"],
              ["--crop-ratio", "0.875", *norm])]
    rows = []
    for k, (name, data, extra) in enumerate(cases):
        stats = os.path.join(a.work, f"stats-images-{k}.json")
        cmd = [a.bin, "calibrate", model, "--calib", data, "--stats", stats, "-q", *extra]
        runs = sorted((measured(cmd)[0] for _ in range(a.repeat)), key=lambda r: r["wall"])
        assert all(r["rc"] == 0 for r in runs), runs
        rows.append((name, runs[len(runs) // 2], json.load(open(stats))["tensors"]))
    base, base_stats = rows[0][1], rows[0][2]
    print(f"\n| calibration data ({a.n} samples, min/max statistics) | wall s | peak MB | wall / array |"
          " largest range difference to the array |\n|---|---|---|---|---|")
    for name, r, st in rows:
        diff = max(max(abs(s["max"] - base_stats[t]["max"]), abs(s["min"] - base_stats[t]["min"]))
                   / max(base_stats[t]["max"] - base_stats[t]["min"], 1e-12) for t, s in st.items())
        print(f"| {name} | {r['wall']:.2f} | {r['peak_mb']:.0f} | {r['wall'] / base['wall']:.3f} | "
              f"{100 * diff:.4g} % |")

if __name__ == "__main__":
    main()
