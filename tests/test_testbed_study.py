"""`rearl testbed study --quick`: shared stages once, methods x seeds from the same start, paired statistics."""

import json

import pytest
import yaml

from rearl.testbed.study import MAIN_METHODS, StudyConfig


def test_seeds_per_method():
    cfg = StudyConfig(seeds_main=3, seeds_other=2)
    assert cfg.seeds("rea_rl") == [0, 1, 2] and cfg.seeds("grpo") == [0, 1]
    assert set(MAIN_METHODS) == {"grpo_len", "rea_rl", "rea_rl_oracle", "rea_rl_alp"}
    assert cfg.seeds("rea_rl_alp") == [0, 1, 2]
    # seed-major: every method's seed 0 before any seed 1, so a study cut short holds whole paired comparisons
    order = StudyConfig(methods=["grpo", "rea_rl"], seeds_main=3, seeds_other=2).runs()
    assert order == [("grpo", 0), ("rea_rl", 0), ("grpo", 1), ("rea_rl", 1), ("rea_rl", 2)]


def test_evaluation_follows_its_training():
    from rearl.testbed.stages import next_ready

    after = {"eval/a": "train/a", "eval/b": "train/b"}
    queue = ["train/a", "eval/a", "train/b", "eval/b", "train/c"]
    assert next_ready(queue, after, set()) == 0
    # two workers: train/a and train/b run; when train/a ends its evaluation goes before train/c
    queue = ["eval/a", "eval/b", "train/c"]
    assert next_ready(queue, after, set()) == 2
    assert next_ready(queue, after, {"train/a"}) == 0
    assert next_ready(["eval/a", "eval/b"], after, set()) is None


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path, quick_toy_cache):
    from rearl.testbed.study import run_study

    out = tmp_path / "st"
    cfg = StudyConfig(out=str(out), methods=["grpo", "grpo_len", "rea_rl_oracle"], seeds_main=2, seeds_other=1,
                      steps=2, prompts_per_step=2, eval_per_level=2, quick=True, jobs=1, threads=1, bootstrap=200,
                      story={"toy_cache_dir": str(quick_toy_cache), "train_reflector": False,
                             "reflection_model": "oracle", "group_size": 2})
    res = run_study(cfg, progress=False, log=lambda *_: None)
    recs = {(r["method"], r["seed"]): r for r in res["records"]}
    assert set(recs) == {("base", None), ("grpo", 0), ("grpo_len", 0), ("grpo_len", 1), ("rea_rl_oracle", 0),
                         ("rea_rl_oracle", 1)}
    assert all(r["n_tasks"] == 8 for r in recs.values())  # the same 8 held-out tasks for everyone
    for (m, s), r in recs.items():
        if m == "base":
            continue
        assert r["vs_base"]["accuracy_all"]["n"] == 8 and r["vs_base"]["accuracy_hard"]["n"] == 4
        assert ("vs_grpo_len" in r) == (m != "grpo_len")
        lo, hi = r["vs_base"]["tokens"]["ci95"]
        assert lo <= r["vs_base"]["tokens"]["diff"] <= hi
        need = r["hard_recheck"]
        assert need["n_needed"] + need["n_not_needed"] == 4
    # every run starts from the same toy; a seed sets sampling and data order, the same for every method
    cfgs = {(m, s): yaml.safe_load((out / f"seed{s}" / "train" / m / "config.yaml").read_text())
            for m, s in recs if m != "base"}
    assert len({c["model_name_or_path"] for c in cfgs.values()}) == 1
    assert all(c["seed"] == s and c["data_seed"] == s for (m, s), c in cfgs.items())
    # every evaluation samples with the same seed on the same tasks as the base's
    runs = [json.loads((out / f"seed{s}" / "eval" / m / "summary.json").read_text())["run"] for m, s in cfgs]
    base = json.loads((out / "shared" / "eval" / "base" / "summary.json").read_text())["run"]
    assert {r["seed"] for r in runs} == {base["seed"]}
    agg = res["methods"]["rea_rl_oracle"]
    assert agg["seeds"] == [0, 1] and agg["vs_base"]["accuracy_all"]["seeds"] == 2
    assert (out / "study.md").read_text().count("| REA-RL (oracle cut) |") == 2
    assert (out / "study.png").stat().st_size > 0
    on_disk = json.loads((out / "study.json").read_text())
    assert on_disk["config"]["steps"] == 2 and "shared" in on_disk["stages"]
    cal = json.loads((out / "shared" / "calibration.json").read_text())
    assert on_disk["threshold"] == cal["threshold"] > 0  # the density panel's reward line

    # a report while runs are missing says which, and builds from the rest without running anything
    before = {p: p.stat().st_mtime_ns for p in out.rglob("rearl_run.json")}
    ev = out / "seed0" / "eval" / "grpo" / "summary.json"
    ev.rename(ev.with_suffix(".bak"))
    part = run_study(cfg, progress=False, log=lambda *_: None, report_only=True)
    assert not part["complete"] and part["missing"] == ["grpo/seed0"]
    assert "grpo" not in part["methods"] and "rea_rl_oracle" in part["methods"]
    assert "**Partial**" in (out / "study.md").read_text()
    assert not ev.exists() and {p: p.stat().st_mtime_ns for p in before} == before
    ev.with_suffix(".bak").rename(ev)
    assert res["complete"] and res["missing"] == []

    # a rerun skips every finished stage
    run_study(cfg, progress=False, log=lambda *_: None)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(ValueError, match="other settings"):
        run_study(StudyConfig(**{**cfg.__dict__, "steps": 3}), progress=False, log=lambda *_: None)


def test_cli_quick_is_small_unless_told():
    from rearl.cli import build_parser
    from rearl.testbed.__main__ import study_config

    p = build_parser()
    quick = study_config(p.parse_args(["testbed", "study", "--quick", "--out", "x"]))
    assert (quick.steps, quick.prompts_per_step, quick.eval_per_level, quick.seeds_main) == (3, 2, 2, 2)
    told = study_config(p.parse_args(["testbed", "study", "--quick", "--steps", "5", "--out", "x"]))
    assert told.steps == 5 and told.eval_per_level == 2
    full = study_config(p.parse_args(["testbed", "study", "--out", "x", "--report-only"]))
    assert (full.steps, full.prompts_per_step, full.eval_per_level, full.seeds_main) == (150, 8, 250, 3)
