"""`rearl train` settings: every recipe value and override is checked against its field's type when it
is read (with where it came from), and `--dry-run` prints what a run would use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rearl.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CPU = str(ROOT / "recipes" / "cpu" / "rea_rl.yaml")


@pytest.mark.parametrize("override,expected", [
    ("revision=no", "revision='no' (str) is not a boolean (true or false)"),
    ("max_steps=abc", "max_steps='abc' (str) is not an integer"),
    ("learning_rate=abc", "learning_rate='abc' (str) is not a number"),
    ("bf16=maybe", "bf16='maybe' (str) is not a boolean"),
    ("train_files=7", "train_files=7 (int) is not a list ([a string, ...]) or a string"),
    ("max_steps=2.5", "is not an integer"),
])
def test_override_types_are_checked(override, expected):
    with pytest.raises(ValueError) as e:
        load_config(CPU, [override])
    assert expected in str(e.value) and "command line" in str(e.value)


def test_recipe_types_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"include: {CPU}\nmask_scaffold_tokens: yes\nrevision_max_tokens: '32'\n")
    with pytest.raises(ValueError) as e:
        load_config(str(bad))
    msg = str(e.value)
    assert f"recipe {bad}: mask_scaffold_tokens='yes'" in msg and "revision_max_tokens='32' (str) is not an integer" in msg


def test_good_values_still_load():
    _, data, cfg = load_config(CPU, ["revision=false", "num_generations=4", "max_steps=3", "learning_rate=1e-5",
                                     "train_files=[a.jsonl]", "top_k=0", "warmup_steps=0.1", "reflection_threshold=100"])
    assert cfg.revision is False and cfg.max_steps == 3 and cfg.learning_rate == 1e-5 and data.train_files == ["a.jsonl"]
    _, data, _ = load_config(CPU, ["train_files=one.jsonl"])  # a single file is accepted as a string
    assert data.train_files == ["one.jsonl"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rearl.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_cli_refuses_a_truthy_string_for_revision():
    r = _cli("train", "--config", CPU, "revision=no", "--dry-run")
    assert r.returncode == 2
    assert "revision='no' (str) is not a boolean (true or false)" in r.stderr and "command line" in r.stderr


@pytest.mark.parametrize("recipe", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes").glob("*/*.yaml")
                                          if p.parent.name not in ("accelerate", "reflector")))
def test_every_recipe_dry_runs(recipe, capsys, monkeypatch):
    from rearl.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["train", "--config", recipe, "--dry-run"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    trl = out["trl (differs from GRPOConfig's defaults)"]
    if out["rea_rl"]["revision"] and out["rea_rl"]["failed_revision_policy"] == "drop":
        assert trl.get("loss_type", "dapo") in ("dapo", "cispo")  # docs/method.md#the-training-step
    assert out["model"]["model_name_or_path"] and isinstance(out["data"]["train_files"], list)


def test_reflection_model_placement():
    from rearl.train.config import check_reflection_model

    _, _, cfg = load_config(CPU, [])
    assert cfg.reflection_model == "default"
    assert check_reflection_model(cfg, "cpu") == []  # the embedded model is the CPU recipes' reflection model
    with pytest.raises(ValueError, match="GPU run"):
        check_reflection_model(cfg, "cuda")
    _, _, local = load_config(CPU, ["reflection_model=/models/refl"])
    assert check_reflection_model(local, "cuda", 1) == []
    assert "each of the 4 training processes loads its own copy" in check_reflection_model(local, "cuda", 4)[0]
    _, _, served = load_config(CPU, ["reflection_model=http://127.0.0.1:8001"])
    assert check_reflection_model(served, "cuda", 4) == []
    _, _, oracle = load_config(CPU, ["reflection_model=oracle"])
    assert check_reflection_model(oracle, "cuda", 4) == []


def test_zero3_is_refused_at_start(tmp_path):
    """Checked where a run starts (REARLConfig.__post_init__); DeepSpeed itself is not installed here, so the
    accelerate-launch environment is passed in."""
    import json

    from rearl.train.config import check_not_zero3, zero_stage

    _, _, cfg = load_config(CPU, [])
    launch3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    with pytest.raises(ValueError, match="ZeRO-3 is not supported"):
        check_not_zero3(cfg, env=launch3)
    check_not_zero3(cfg, env={**launch3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})
    assert zero_stage(cfg, env={}) is None
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    cfg.deepspeed = str(ds)
    assert zero_stage(cfg, env={}) == 3
    with pytest.raises(ValueError, match="zero2.yaml"):
        check_not_zero3(cfg, env={})


def test_train_files_are_relative_to_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "r").mkdir()
    rec = tmp_path / "r" / "x.yaml"
    rec.write_text(f"include: {CPU}\ntrain_files: [data/a.jsonl, /abs/b.jsonl]\n")
    monkeypatch.chdir(ROOT)
    _, data, _ = load_config(str(rec))
    assert data.train_files == [str(tmp_path / "r" / "data" / "a.jsonl"), "/abs/b.jsonl"]
    _, data, _ = load_config(str(rec), ["train_files=[c.jsonl]"])  # the command line's stay relative to the cwd
    assert data.train_files == ["c.jsonl"]
    _, data, _ = load_config(CPU)  # the shipped recipes find ../shared from any working directory
    monkeypatch.chdir(tmp_path)
    assert load_config(CPU)[1].train_files == data.train_files
    assert data.train_files[0].endswith("shared/data/train/deepscaler_train_math.jsonl")
    assert os.path.isabs(data.train_files[0])


def test_train_help_lists_the_recipe_keys(capsys):
    from rearl.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("model_name_or_path (default 'default')", "train_files (default [])", "revision (default True)",
                "failed_revision_policy (default 'drop')", "rollout_backend (default 'auto')"):
        assert key in out, key
    assert "max_completion_length" in out and "vllm_importance_sampling_correction" in out  # TRL's, by name
