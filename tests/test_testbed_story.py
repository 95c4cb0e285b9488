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
            for n in ("train", "calibration", "heldout")}
    assert [len(rows[n]) for n in ("train", "calibration", "heldout")] == [300, 40, 100]
    probs = {n: {r["problem"] for r in v} for n, v in rows.items()}
    assert not probs["train"] & probs["heldout"] and not probs["calibration"] & probs["heldout"]
    assert not probs["train"] & probs["calibration"]
    assert sorted({r["level"] for r in rows["heldout"]}) == [1, 2, 3, 4]
    assert sum(r["level"] == 1 for r in rows["heldout"]) == 25


def _lv(acc, tokens, refl, after=None, tokens_after=None, n=100):
    return {"n": n, "accuracy": acc, "accuracy_ci95": 5.0, "tokens": tokens, "reflections": refl,
            "reflections_after_first_correct": after, "tokens_after_first_correct": tokens_after}


def _band(median, p10=None, p90=None):
    return {"median": median, "p10": median if p10 is None else p10, "p90": median if p90 is None else p90, "n": 50}


def _measured(removable, p10, p90, easy, hard, before, after, paragraphs):
    lv = {str(k): {"removable_share": _band(easy)} for k in S.EASY} | {str(k): {"removable_share": _band(hard)}
                                                                        for k in S.HARD}
    return {"base": {"all": {"removable_share": _band(removable, p10, p90), "density_before": _band(before),
                             "density_after": _band(after), "paragraphs": _band(paragraphs)}, "by_level": lv}}


def test_targets_are_measured_not_assumed():
    base = {"easy": _lv(95, 250, 4.0, 3.5), "hard": _lv(60, 350, 6.0, 2.0), "all": _lv(77.5, 300, 5.0, None, 120, 200)}
    good = {"easy": _lv(95, 120, 1.5), "hard": _lv(60, 240, 5.7), "all": _lv(77.5, 180, 3.6, None, 30, 200)}
    collapse = {"easy": _lv(90, 100, 0.2), "hard": _lv(30, 150, 0.5), "all": _lv(60, 125, 0.35)}
    ot = _measured(0.45, 0.0, 0.7, 0.55, 0.3, 12.0, 18.0, 9)
    t = {r["target"]: r for r in S.check_targets({"base": base, "rea_rl": good, "grpo_len": collapse}, ot)}
    assert all(r["met"] for r in t.values()), [k for k, r in t.items() if not r["met"]]
    assert len(t) == 12
    assert t["REA-RL: mean tokens <= 0.70 x base"]["measured"] == pytest.approx(0.6)
    assert t["REA-RL: >= 60% of the base's removable overthinking removed"]["measured"] == pytest.approx(75.0)
    # a REA-RL that only shortens easy answers by a little, and loses accuracy, misses; so does a world
    # whose traces put all reflection after the answer and never stop right after it (world v1)
    bad = {"easy": _lv(90, 230, 3.9), "hard": _lv(40, 200, 1.0), "all": _lv(65, 215, 2.45, None, 100, 200)}
    v1 = _measured(0.65, 0.3, 0.7, 0.63, 0.69, 0.0, 20.0, 4)
    t = {r["target"]: r["met"] for r in S.check_targets({"base": base, "rea_rl": bad, "grpo_len": base}, v1)}
    assert [k for k, met in t.items() if met] == [
        "base overthinks: >= 2 reflections after the first correct answer on easy levels"]
    # without a measurement of the toy's traces, the world's bands are not claimed
    assert not any(r["target"].startswith("base: ") for r in S.check_targets({"base": base}))


def test_reflector_targets():
    base = {"all": _lv(60, 400, 5.0)}
    oracle = {"all": _lv(62, 280, 4.0)}  # 30% fewer tokens
    learned = {"all": _lv(61.5, 310, 4.2)}  # 22.5%: 75% of the oracle's reduction
    refl = {"table": [{"method": "trained model, whole trace", "exact": 81.0},
                      {"method": "teacher labels (oracle)", "exact": 100.0},
                      {"method": "no Result (all Think: cut at the cap)", "exact": 56.0},
                      {"method": "fixed ratio 0.5", "exact": 4.0}]}
    timing = {"rea_rl": {"steps": 90, "reflection_s": 0.6, "step_s": 10.0, "share": 0.06}}
    t = {r["target"]: r for r in S.check_targets({"base": base, "rea_rl": learned, "rea_rl_oracle": oracle}, None,
                                                  refl, timing)}
    share = t["REA-RL with the learned reflector: >= 80% of the oracle-cut REA-RL's token reduction"]
    assert share["measured"] == pytest.approx(75.0) and share["met"] is False
    acc = t["REA-RL with the learned reflector: accuracy within 1 point of the oracle-cut REA-RL"]
    assert acc["measured"] == pytest.approx(-0.5) and acc["met"]
    beat = t["reflector: Normal-cut agreement with the teacher beats every naive baseline by >= 10 points"]
    assert beat["measured"] == pytest.approx(25.0) and beat["met"] and "no Result" in beat["detail"]
    assert t["reflector: scoring <= 25% of the RL step (REA-RL)"]["met"]
    refl["table"][2]["exact"] = 75.0  # a baseline within 10 points
    t = {r["target"]: r["met"] for r in S.check_targets({"base": base}, None, refl, None)}
    assert t == {"base overthinks: >= 2 reflections after the first correct answer on easy levels": None,
                 "reflector: Normal-cut agreement with the teacher beats every naive baseline by >= 10 points": False}


def test_probe_gate_stops_a_model_that_did_not_learn():
    meta = {"probe": {"L1": 100.0, "L2": 90.0, "L3": 10.0, "L4": 0.0, "all": 50.0, "per_level": 10},
            "sft": {"document_tokens": 1000, "final_loss": 0.3, "cut_by_time_cap": True}}
    with pytest.raises(RuntimeError, match=r"failed its probe \(its SFT hit the time cap\).*L3 10%, L4 0% < 30%"):
        S.check_probe(meta, 30.0, "toy")
    S.check_probe(meta, 0.0, "toy")  # the quick story does not gate
    S.check_probe({**meta, "probe": {**meta["probe"], "L3": 40.0, "L4": 35.0}}, 30.0, "toy")
    with pytest.raises(RuntimeError, match="no build probe"):
        S.check_probe({"sft": {}}, 30.0, "toy")


@pytest.mark.slow
def test_quick_story_end_to_end_and_resume(tmp_path, quick_toy_cache, monkeypatch):
    """`rearl testbed run --quick`: every stage with the real code paths, then a rerun that skips them all."""
    from rearl.cli import main

    out = tmp_path.resolve() / "tb"
    cache = quick_toy_cache
    monkeypatch.chdir(tmp_path)  # a relative --out, as make demo passes it
    args = ["testbed", "run", "--quick", "--out", "tb", "--toy-cache-dir", str(cache), "--no-progress",
            "--threads", "1"]
    assert main(args) == 0
    # the paths the stages record are absolute: the report reads them from any working directory
    assert json.loads((out / "eval" / "grpo" / "summary.json").read_text())["run"]["tokenizer"] == str(out / "train" / "grpo")
    rep = out / "report"
    for f in ("testbed.md", "testbed.json", "report.md", "by_level.png", "accuracy_vs_tokens.png",
              "training_curves.png"):
        assert (rep / f).stat().st_size > 0, f
    summary = json.loads((rep / "testbed.json").read_text())
    assert set(summary["stats"]) == {"base", "grpo", "grpo_len", "rea_rl", "rea_rl_oracle"}
    assert summary["stats"]["base"]["all"]["n"] == 8  # 2 held-out tasks x 4 levels
    # each method trained its own policy with its own rewards, from the same start
    logs = {m: json.loads((out / "train" / m / "rearl_run.json").read_text())
            for m in ("grpo", "grpo_len", "rea_rl", "rea_rl_oracle")}
    assert all(logs.values())
    # REA-RL cuts with the toy reflector trained in the story, the oracle-cut row with the oracle
    cfg = yaml.safe_load((out / "train" / "rea_rl" / "config.yaml").read_text())
    assert cfg["revision"] and cfg["reflection_model"] == str(out / "reflector_toy" / "model")
    assert yaml.safe_load((out / "train" / "rea_rl_oracle" / "config.yaml").read_text())["reflection_model"] == "oracle"
    toy = json.loads((out / "reflector_toy" / "eval.json").read_text())
    assert toy["train"]["steps"] == 4 and toy["score_seconds_per_trace"] > 0
    assert any(r["method"].startswith("trained model") for r in toy["table"])
    assert (out / "reflector_toy" / "learning_curve.png").stat().st_size > 0
    assert summary["reflection_timing"]["rea_rl"]["steps"] == 3
    assert (out / "reflector" / "model" / "config.json").exists() and (out / "reflector" / "eval.md").exists()
    md = (rep / "testbed.md").read_text()
    assert "## Targets" in md and "REA-RL (oracle cut)" in md and "Reflection model vs the oracle" in md
    assert "The toy reflection model vs the teacher" in md
    assert "## The hard levels' re-check" in md
    assert "one training seed per method" in md and "rearl testbed study" in md  # the short story says so
    hard = summary["stats"]["base"]["hard"]
    assert 0 <= hard["rechecked"] <= 100 and 0 <= hard["first_answer_wrong"] <= 100
    stages = json.loads((out / "stages.json").read_text())
    assert {"data", "base_samples", "calibrate", "reflector", "reflector_toy", "train/rea_rl", "train/rea_rl_oracle",
            "eval/base", "eval/rea_rl"} <= set(stages)

    # a rerun skips every finished stage and rewrites the same report
    before = {p: p.stat().st_mtime_ns for p in (out / "train").rglob("rearl_run.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # other settings in the same directory are refused, not mixed
    assert main(args + ["--steps", "5"]) == 2
