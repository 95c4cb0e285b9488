#!/usr/bin/env bash
# Prepares what scripts/device_check.sh carries to a lent GPU machine (which reaches no registry):
# .device/toy (the built toy LRM), .device/reflector (a toy reflection model, if a story made one) and
# .device/wheels (the pure-Python packages the device's Python lacks). Carry .device with the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .device/wheels
TOY=$($PY -m rearl.cli testbed build --threads 2 | tail -1)
rm -rf .device/toy && cp -r "$TOY" .device/toy
REFL=${REARL_REFLECTOR:-runs/testbed/reflector_toy/model}
[ -d "$REFL" ] && { rm -rf .device/reflector; cp -r "$REFL" .device/reflector; }
# pure-Python wheels only (the device has torch, transformers, accelerate, peft); datasets' pyarrow is
# not pure Python and is left to the device's Python
"$PY" -m pip download -q --no-deps -d .device/wheels trl==1.16.0 math-verify==0.9.0 latex2sympy2_extended \
    antlr4-python3-runtime==4.13.2 gguf==0.19.0 rich markdown-it-py mdurl
du -sh .device
