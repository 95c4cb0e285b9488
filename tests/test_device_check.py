"""scripts/device_check.sh --dry-run: the GPU path's checks, run on CPU at a tiny size (what CI can run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run(tmp_path, quick_toy_cache):
    from rearl.testbed.toy_model import build_toy_lrm

    toy = build_toy_lrm(quick_toy_cache, quick=True, progress=False, threads=1)
    env = {**os.environ, "PYTHON": sys.executable, "REARL_TOY": str(toy), "OUT": str(tmp_path / "dc")}
    r = subprocess.run(["bash", "scripts/device_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for check in ("train grpo", "train grpo_len", "train rea_rl_oracle", "resume grpo", "eval grpo"):
        assert f"PASS {check}:" in out, check
    assert "device check: 5 passed, 0 failed" in out
    assert "TRL's completions/mean_length" in out
