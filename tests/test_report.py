import json
import re

import pytest

from rearl.cli import main
from rearl.core.io import DataError
from rearl.core.revision import Generation
from rearl.eval.benchmarks import load_benchmark
from rearl.eval.report import make_report
from rearl.eval.run import EvalConfig, evaluate

LIMIT = 4


class Scripted:
    """A policy that answers from a script: problem text -> completion (always finished)."""

    def __init__(self, tok, script):
        self.tokenizer, self.script = tok, script

    def generate(self, prompts, max_new_tokens=256, temperature=0.6, top_p=1.0, top_k=50, seed=None):
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            reply = next(v for q, v in self.script.items() if q in text)
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"][:max_new_tokens]
            out.append(Generation(ids + [self.tokenizer.eos_token_id], reply, True))
        return out


def _problems(shared):
    return {b: list(load_benchmark(b, limit=LIMIT)) for b in ("gsm8k", "math500")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, r1_tok, pool, shared):
    """base: long, always right; short: short, right on the first half of each benchmark only."""
    d = tmp_path_factory.mktemp("runs")
    probs = _problems(shared)
    base = {r["problem"]: "<think>\n" + "Let me think. Wait, check it.\n" * 12 + f"</think>\n\n\\boxed{{{r['answer']}}}"
            for rs in probs.values() for r in rs}
    short = {}
    for rs in probs.values():
        for i, r in enumerate(rs):
            short[r["problem"]] = f"<think>\nok\n</think>\n\\boxed{{{r['answer'] if i < LIMIT // 2 else 'nope'}}}"
    for name, script in (("base", base), ("short", short)):
        cfg = EvalConfig(model="scripted", out=str(d / name), benchmarks=["gsm8k", "math500"], limit=LIMIT,
                         max_tokens=512, budgets=[64])
        evaluate(cfg, progress=False, policy=Scripted(r1_tok, script), pool=pool)
    return d


def _table(md, title):
    """The rows of the Markdown table under a heading, as {first cell: [cells]}."""
    block = md.split(title, 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return rows[0], {r[0]: r[1:] for r in rows[2:]}


def _samples(run):
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def test_report_table_matches_the_samples(runs, tmp_path):
    out = tmp_path / "report"
    res = make_report([runs / "base", runs / "short"], out)
    for f in ("report.md", "report.json", "accuracy_vs_tokens.png", "reflection_interval_by_level.png"):
        assert (out / f).stat().st_size > 0, f
    assert not (out / "training_curves.png").exists() and "training_curves" not in res["plots"]
    md = (out / "report.md").read_text()
    assert "no training curves" in md
    head, rows = _table(md, "### Accuracy (%), budget 512 tokens")
    assert head == ["Method", "GSM8K", "MATH500", "Avg Acc", "Avg TR"]
    assert rows["base"] == ["100.00", "100.00", "100.00", "100.0%"]
    # from the samples: accuracy by our own reading of the scripted answers, TR from the token counts
    exp = {}
    for name in ("base", "short"):
        recs = _samples(runs / name)
        for b in ("gsm8k", "math500"):
            rs = [r for r in recs if r["benchmark"] == b]
            exp[name, b] = (100.0 * sum("nope" not in r["text"] for r in rs) / len(rs),
                            sum(r["n_tokens"] for r in rs) / len(rs))
    tr = {b: 100.0 * exp["short", b][1] / exp["base", b][1] for b in ("gsm8k", "math500")}
    assert rows["short"] == [f"{exp['short', 'gsm8k'][0]:.2f}", f"{exp['short', 'math500'][0]:.2f}",
                             f"{(exp['short', 'gsm8k'][0] + exp['short', 'math500'][0]) / 2:.2f}",
                             f"{(tr['gsm8k'] + tr['math500']) / 2:.1f}%"]
    assert rows["short"][0] == "50.00" and tr["gsm8k"] < 30
    _, tok_rows = _table(md, "### Mean tokens (token ratio), budget 512 tokens")
    assert tok_rows["short"][0] == f"{exp['short', 'gsm8k'][1]:.0f} ({tr['gsm8k']:.1f}%)"
    # the 64-token budget cuts every base sample inside its thinking: all wrong there
    _, rows64 = _table(md, "### Accuracy (%), budget 64 tokens")
    assert rows64["base"][:3] == ["0.00", "0.00", "0.00"] and rows64["short"][0] == "50.00"
    t = res["tables"]["512"][1]
    assert t["run"] == "short" and t["accuracy"]["gsm8k"] == pytest.approx(exp["short", "gsm8k"][0])


def test_report_reference_and_labels(runs, tmp_path):
    res = make_report([runs / "short", runs / "base"], tmp_path, reference=runs / "base", labels=["S", "B"])
    rows = {r["run"]: r for r in res["tables"]["512"]}
    assert rows["B"]["avg_token_ratio"] == pytest.approx(100.0) and rows["S"]["avg_token_ratio"] < 30
    with pytest.raises(ValueError, match="labels"):
        make_report([runs / "short"], tmp_path, labels=["a", "b"])


def test_report_rescores_a_run_without_summary(runs, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(runs / "short", d)
    before = json.loads((d / "summary.json").read_text())
    (d / "summary.json").unlink()
    res = make_report([d], tmp_path / "r")
    after = json.loads((d / "summary.json").read_text())
    assert after["benchmarks"] == before["benchmarks"]
    assert res["tables"]["512"][0]["accuracy"]["gsm8k"] == pytest.approx(50.0)


def _trainer_state(d, steps, bump=0.0):
    ck = d / f"checkpoint-{steps[-1]}"
    ck.mkdir(parents=True)
    hist = [{"step": s, "loss": 0.1, "reward": 0.2 + 0.01 * s + bump, "reward_std": 0.1,
             "completions/mean_length": 900 - 5 * s, "revision/cut_fraction": 0.3, "learning_rate": 1e-5}
            for s in steps]
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": steps[-1], "log_history": hist}))


def test_training_curves_from_trainer_state(runs, tmp_path):
    train = tmp_path / "train"
    _trainer_state(train, [1, 2, 3])
    _trainer_state(train, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], bump=1.0)  # the newest checkpoint wins
    res = make_report([runs / "base", train], tmp_path / "r")
    assert (tmp_path / "r" / "training_curves.png").stat().st_size > 0
    md = (tmp_path / "r" / "report.md").read_text()
    keys = re.search(r"Logged metrics: (.*)\.", md).group(1)
    assert "`reward`" in keys and "`completions/mean_length`" in keys and "`revision/cut_fraction`" in keys
    assert "reward_std" not in keys and "learning_rate" not in keys and "loss" not in keys
    assert res["runs"][1]["trainer_state"].endswith("checkpoint-12/trainer_state.json")
    assert [r["run"] for r in res["tables"]["512"]] == ["base"]  # a training dir is no table row
    only = make_report([train], tmp_path / "t")  # training runs alone: curves, no tables
    assert only["tables"] == {} and "training_curves" in only["plots"]


def test_report_rejects_a_dir_that_is_no_run(tmp_path):
    with pytest.raises(DataError, match="neither an evaluation run"):
        make_report([tmp_path], tmp_path / "r")


def test_cli_eval_and_report(tmp_path, tiny_model_dir, shared, capsys):
    out = tmp_path / "run"
    rc = main(["eval", "--model", tiny_model_dir, "--benchmarks", "gsm8k", "--limit", "2", "--max-tokens", "4",
               "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "budget 4 tokens" in text and "budget 2 tokens" in text and "gsm8k" in text
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2
    rc = main(["report", str(out), "--out", str(tmp_path / "rep")])
    assert rc == 0 and "| run | 0.00 | 0.00 | 100.0% |" in capsys.readouterr().out
    assert main(["eval", "--model", tiny_model_dir, "--benchmarks", "gsm8k", "--n", "x", "--out", str(out)]) == 2
    assert main(["eval", "--model", tiny_model_dir, "--benchmarks", "nope", "--out", str(out)]) == 2


def test_training_curves_plot_the_true_length(tmp_path):
    """With lengths/samples/mean logged, the deflated completions/mean_length is not plotted."""
    from rearl.eval.report import Run, plot_training

    hist = [{"step": s, "reward": 0.1 * s, "completions/mean_length": 300 - s, "lengths/samples/mean": 400 - s,
             "lengths/samples/max": 500, "lengths/revisions/mean": 200.0} for s in range(1, 4)]
    keys = plot_training([Run(path=tmp_path, label="rea", log_history=hist)], tmp_path / "c.png")
    assert keys[0] == "lengths/samples/mean" and "completions/mean_length" not in keys
    assert "lengths/revisions/mean" in keys and "lengths/samples/max" not in keys
    old = [{k: v for k, v in h.items() if not k.startswith("lengths/")} for h in hist]  # a run from before
    assert plot_training([Run(path=tmp_path, label="old", log_history=old)], tmp_path / "d.png")[0] == "completions/mean_length"
