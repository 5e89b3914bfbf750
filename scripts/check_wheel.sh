#!/usr/bin/env bash
# The package as a user installs it: build a wheel, install it into a fresh virtual environment
# outside the checkout (its dependencies from the package registry, as setup.sh installs them), then,
# from a directory outside the checkout, run `coophash demo --epochs 2`, an index build and search, and
# the README's Python example (at 2 epochs). Fails if the wheel holds any top-level import package
# but coophash_keras (export/ and serving/ install as coophash_keras.export and .serving).
#
#   bash scripts/check_wheel.sh [WORK_DIR]      # WORK_DIR outside the checkout; default: a new /tmp dir
#
# Not a unit test: it downloads the dependencies into a new environment (minutes; pip's cache helps).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/coophash_wheel.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in "$REPO"/*) echo "check_wheel: WORK_DIR must be outside the checkout ($REPO)" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
if [ -x "$REPO/.venv/bin/python" ]; then BUILD_PY="$REPO/.venv/bin/python"; else BUILD_PY=$PY; fi

echo "== building the wheel into $WORK/dist"
rm -rf "$WORK/dist" "$REPO/build"
"$BUILD_PY" -m pip wheel --no-deps -q -w "$WORK/dist" "$REPO"
rm -rf "$REPO/build"  # setuptools' staging copy, not part of the checkout
WHEEL=$(ls "$WORK"/dist/coophash_keras-*.whl)
echo "$(basename "$WHEEL")"

echo "== top-level import packages in the wheel"
"$BUILD_PY" - "$WHEEL" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as zf:
    names = zf.namelist()
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    listed = [line.split(",")[0] for line in zf.read(record).decode().splitlines() if line]
    top_level_txt = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
    declared = zf.read(top_level_txt).decode().split() if top_level_txt else []
top = sorted({p.split("/")[0] for p in listed if not p.split("/")[0].endswith((".dist-info", ".data"))})
print("from RECORD:        ", " ".join(top))
print("from top_level.txt: ", " ".join(declared) or "(none)")
for needed in ("coophash_keras/index/hamming_kernel.c", "coophash_keras/export/__init__.py",
               "coophash_keras/serving/server.py"):
    if needed not in listed:
        sys.exit(f"check_wheel: {needed} is missing from the wheel")
if top != ["coophash_keras"] or declared not in ([], ["coophash_keras"]):
    sys.exit(f"check_wheel: the wheel installs top-level packages {top} / {declared}, not only coophash_keras")
PY

echo "== a fresh virtual environment: $WORK/venv"
rm -rf "$WORK/venv"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$WHEEL"

OUT="$WORK/outside"
rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"
echo "== from $OUT: where the package comes from, and no top-level export / serving"
"$WORK/venv/bin/python" - <<'PY'
import importlib.util

import coophash_keras
import coophash_keras.export
import coophash_keras.serving.server

print("coophash_keras        ", coophash_keras.__file__)
print("coophash_keras.export ", coophash_keras.export.__file__)
print("coophash_keras.serving", coophash_keras.serving.__file__)
assert "site-packages" in coophash_keras.export.__file__ and "site-packages" in coophash_keras.serving.__file__
for name in ("export", "serving"):
    assert importlib.util.find_spec(name) is None, f"a top-level {name!r} is importable"
print("no top-level export or serving package")
PY

echo "== coophash demo --run-dir $OUT/demo --epochs 2"
"$WORK/venv/bin/coophash" demo --run-dir "$OUT/demo" --epochs 2 --progress none
echo "== coophash index build / search (the C kernel's source ships in the wheel)"
"$WORK/venv/bin/coophash" index build --model "$OUT/demo" --split database --out "$OUT/db.idx"
"$WORK/venv/bin/python" -c "import numpy as np; from PIL import Image; from coophash_keras.data import load_digits; \
Image.fromarray(load_digits().images[0][..., 0]).save('q.png')"
"$WORK/venv/bin/coophash" index search --index "$OUT/db.idx" --model "$OUT/demo" --k 3 q.png

echo "== the README's Python example (epochs=20 -> 2)"
"$WORK/venv/bin/python" - "$REPO/README.md" > readme_example.py <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"## Use it from Python\n.*?```python\n(.*?)```", text, re.S).group(1)  # the first example
assert "epochs=20" in block
print(block.replace("epochs=20", "epochs=2"))
PY
"$WORK/venv/bin/python" readme_example.py
ls -l model.keras
echo "check_wheel: OK (top level: coophash_keras only; demo, index and the README example ran outside the checkout)"
