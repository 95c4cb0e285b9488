#!/usr/bin/env bash
# The GPU path in one short run (scripts/device_check.py). On the lent GPU machine (torch with CUDA,
# transformers, accelerate, peft; no registry): installs this checkout and the wheels carried in
# .device/wheels (scripts/device_prepare.sh makes them), then runs the checks with the carried toy LRM.
#   bash scripts/device_check.sh            # on the device, from the repository root
#   bash scripts/device_check.sh --dry-run  # on CPU (CI): the same checks, tiny, float32
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
if [ "$DRY" = 1 ]; then
    PY=${PYTHON:-.venv/bin/python}
    TOY=${REARL_TOY:-$($PY -m rearl.cli testbed build --quick --threads 1 | tail -1)}
    exec env OMP_NUM_THREADS=1 "$PY" scripts/device_check.py --toy "$TOY" --out "${OUT:-runs/device_check_dry}" "$@"
fi
PY=${PYTHON:-python3}
if [ -d .device/wheels ]; then
    "$PY" -m pip install -q --no-index --find-links .device/wheels --no-deps .device/wheels/*.whl
fi
"$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
TOY=${REARL_TOY:-.device/toy}
REFL=()
[ -d .device/reflector ] && REFL=(--reflector .device/reflector)
exec "$PY" scripts/device_check.py --toy "$TOY" "${REFL[@]}" --out "${OUT:-$HOME/device_check}" "$@"
