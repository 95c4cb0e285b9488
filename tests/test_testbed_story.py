"""The testbed story: method recipes, data split, target checks, and the --quick run end to end."""

import json
from pathlib import Path

import pytest
import yaml

from rearl.testbed import story as S

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("method", list(S.METHODS))
def test_methods_mirror_the_cpu_recipes(method):
    recipe = yaml.safe_load((ROOT / "recipes" / "cpu" / f"{method}.yaml").read_text())
    for k, v in S.METHODS[method].items():
        assert recipe.get(k, v) == v, (method, k)
    # what the recipe says about the method is all in METHODS (the shared keys are the testbed's)
    own = {k for k in recipe if k not in ("include", "output_dir", "num_generations")}
    assert own <= set(S.METHODS[method]), own - set(S.METHODS[method])


def test_train_settings_keep_g_samples_equal_across_methods(tmp_path):
    cfg = S.StoryConfig(group_size=4, prompts_per_step=2)
    for m in S.METHODS:
        s = S.train_settings(cfg, m, "toy", tmp_path / "t.jsonl", 60.0, "oracle", tmp_path / m)
        rows = 8 if S.METHODS[m]["revision"] else 4  # G samples (+ G revisions with revision on)
        assert s["num_generations"] == rows and s["per_device_train_batch_size"] == 2 * rows
        assert s["revision_scaffold"] == "\n</think>\n\n" and s["reflection_threshold"] == 60.0
        assert s["max_steps"] == cfg.steps and s["learning_rate"] == cfg.learning_rate


def test_train_settings_load_as_a_rearl_recipe(tmp_path):
    from rearl.train.config import load_config

    s = S.train_settings(S.StoryConfig(), "rea_rl", "toy", tmp_path / "t.jsonl", 60.0, "oracle", tmp_path / "o")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(s))
    _, data, cfg = load_config(str(p))
    assert cfg.revision and cfg.reflection_model == "oracle" and cfg.parallel_samples == 4
    assert data.train_files == [str(tmp_path / "t.jsonl")]


def test_bad_story_options_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        S.StoryConfig(methods=["ppo"])
    with pytest.raises(ValueError, match="reflection_model"):
        S.StoryConfig(reflection_model="judge")
    with pytest.raises(ValueError, match="steps must be positive"):
        S.StoryConfig(steps=0)


def test_data_split_has_no_shared_problem(tmp_path):
    cfg = S.StoryConfig(train_tasks=300, calibration_tasks=40, eval_per_level=25)
    S.make_data(cfg, tmp_path)
    rows = {n: [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
            for n in ("train", "calibration", "eval")}
    assert [len(rows[n]) for n in ("train", "calibration", "eval")] == [300, 40, 100]
    probs = {n: {r["problem"] for r in v} for n, v in rows.items()}
    assert not probs["train"] & probs["eval"] and not probs["calibration"] & probs["eval"]
    assert not probs["train"] & probs["calibration"]
    assert sorted({r["level"] for r in rows["eval"]}) == [1, 2, 3, 4]
    assert sum(r["level"] == 1 for r in rows["eval"]) == 25


def _lv(acc, tokens, refl, after=None):
    return {"accuracy": acc, "accuracy_ci95": 5.0, "tokens": tokens, "reflections": refl,
            "reflections_after_first_correct": after}


def test_targets_are_measured_not_assumed():
    base = {"easy": _lv(95, 250, 4.0, 3.5), "hard": _lv(50, 350, 3.0, 2.0), "all": _lv(72.5, 300, 3.5)}
    good = {"easy": _lv(95, 120, 1.5), "hard": _lv(50, 240, 2.7), "all": _lv(72.0, 180, 2.1)}
    collapse = {"easy": _lv(90, 100, 0.2), "hard": _lv(30, 150, 0.5), "all": _lv(60, 125, 0.35)}
    t = {r["target"]: r for r in S.check_targets({"base": base, "rea_rl": good, "grpo_len": collapse})}
    assert all(r["met"] for r in t.values()), [k for k, r in t.items() if not r["met"]]
    assert t["REA-RL: >= 35% fewer tokens than base"]["measured"] == pytest.approx(40.0)
    # a REA-RL that only shortens easy answers by a little, and loses accuracy, misses
    bad = {"easy": _lv(90, 230, 3.9), "hard": _lv(40, 200, 1.0), "all": _lv(65, 215, 2.45)}
    t = {r["target"]: r["met"] for r in S.check_targets({"base": base, "rea_rl": bad})}
    assert t == {"base overthinks: >= 2 reflections after the first correct answer on easy levels": True,
                 "REA-RL: >= 35% fewer tokens than base": False, "REA-RL: accuracy >= base - 1 point": False,
                 "REA-RL: reflections per response on hard levels >= 80% of base": False,
                 "REA-RL: reflections per response on easy levels <= 60% of base": False}


@pytest.mark.slow
def test_quick_story_end_to_end_and_resume(tmp_path):
    """`rearl testbed run --quick`: every stage with the real code paths, then a rerun that skips them all."""
    from rearl.cli import main

    out = tmp_path / "tb"
    cache = tmp_path / "cache"
    args = ["testbed", "run", "--quick", "--out", str(out), "--toy-cache-dir", str(cache), "--no-progress",
            "--threads", "1"]
    assert main(args) == 0
    rep = out / "report"
    for f in ("testbed.md", "testbed.json", "report.md", "by_level.png", "accuracy_vs_tokens.png",
              "training_curves.png"):
        assert (rep / f).stat().st_size > 0, f
    summary = json.loads((rep / "testbed.json").read_text())
    assert set(summary["stats"]) == {"base", "grpo", "grpo_len", "rea_rl"}
    assert summary["stats"]["base"]["all"]["n"] == 8  # 2 held-out tasks x 4 levels
    # each method trained its own policy with its own rewards, from the same start
    logs = {m: json.loads((out / "train" / m / "rearl_run.json").read_text()) for m in ("grpo", "grpo_len", "rea_rl")}
    assert all(logs.values())
    cfg = yaml.safe_load((out / "train" / "rea_rl" / "config.yaml").read_text())
    assert cfg["revision"] and cfg["reflection_model"] == "oracle"
    assert (out / "reflector" / "model" / "config.json").exists() and (out / "reflector" / "eval.md").exists()
    md = (rep / "testbed.md").read_text()
    assert "## Targets" in md and "REA-RL" in md and "Reflection model vs the oracle" in md
    stages = json.loads((out / "stages.json").read_text())
    assert {"data", "base_samples", "calibrate", "reflector", "train/rea_rl", "eval/base", "eval/rea_rl"} <= set(stages)

    # a rerun skips every finished stage and rewrites the same report
    before = {p: p.stat().st_mtime_ns for p in (out / "train").rglob("rearl_run.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # other settings in the same directory are refused, not mixed
    assert main(args + ["--steps", "5"]) == 2
