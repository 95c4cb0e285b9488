import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "rearl.cli", *args], capture_output=True, text=True)


def test_help_lists_every_subcommand():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("detect", "calibrate", "models", "verify"):
        assert cmd in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("rearl ")


def test_verify_command():
    assert run("verify", "--gold", "1/2", "--completion", "</think> \\boxed{0.5}").returncode == 0
    assert run("verify", "--gold", "1/2", "--completion", "</think> \\boxed{0.6}").returncode == 1


def test_calibrate_on_shared_traces(shared, tmp_path):
    out = tmp_path / "cal.json"
    r = run("calibrate", "--responses", str(shared / "data/traces/deepscaler_1.5b_preview_aime24_budget8192.jsonl"),
            "--tokenizer", str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), "--quantile", "0.2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    cal = json.loads(out.read_text())
    assert cal["n_responses"] == 30 and len(cal["per_response"]) == 30
    assert cal["threshold"] == cal["percentiles"]["80"]
    assert abs(cal["density_quantile"] * cal["threshold"] - 1) < 1e-9
    assert "T = p80" in r.stdout
    assert f"reflection_threshold={cal['threshold']:.2f}" in r.stdout  # where T goes
