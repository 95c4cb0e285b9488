"""The command line tried as a new user would: a run resumes only into a run of the same input and
settings, an output is never an input, empty or non-UTF-8 input and bad flag values are errors that
name the file, line or flag."""

import json
import subprocess
import sys
import time

import pytest

from rearl.cli import main

from test_detect import trace


def _write(p, rows):
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def traces(tmp_path):
    p = tmp_path / "t.jsonl"
    _write(p, [{"id": k, "problem": "p", "answer": "42", "response": trace(answer_at=6 + k % 3)} for k in range(4)])
    return p


@pytest.fixture
def tok(shared):
    return str(shared / "models/deepseek-r1-distill-qwen-tokenizer")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rearl.cli", *args], capture_output=True, text=True, timeout=300)


def test_detect_refuses_to_mix_runs_then_force_starts_fresh(tmp_path, traces, tok, capsys):
    out = tmp_path / "cuts.jsonl"
    assert main(["detect", "--input", str(traces), "--out", str(out), "--tokenizer", tok]) == 0
    r = _cli("detect", "--detector", "ratio", "--input", str(traces), "--out", str(out), "--tokenizer", tok)
    assert r.returncode == 2 and "detector: 'oracle' there, 'ratio' now" in r.stderr and "--force" in r.stderr
    assert main(["detect", "--detector", "ratio", "--input", str(traces), "--out", str(out), "--tokenizer", tok,
                 "--force"]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 4 and {r["detector"] for r in recs} == {"ratio"}
    assert json.loads((tmp_path / "cuts.summary.json").read_text())["detector"] == "ratio"
    # a second trace file into the same --out is another run, not more of this one
    other = tmp_path / "other.jsonl"
    _write(other, [{"id": 9, "problem": "p", "answer": "42", "response": trace(answer_at=7)}])
    capsys.readouterr()
    assert main(["detect", "--detector", "ratio", "--input", str(other), "--out", str(out), "--tokenizer", tok]) == 2
    assert "input:" in capsys.readouterr().err and len(out.read_text().splitlines()) == 4


def test_failed_records_are_redone_on_resume(tmp_path, traces, tok):
    out = tmp_path / "cuts.jsonl"
    assert main(["detect", "--input", str(traces), "--out", str(out), "--tokenizer", tok, "--limit", "2"]) == 0
    lines = out.read_text().splitlines()
    lines[1] = json.dumps({"id": "1", "detector": "oracle", "position": "normal", "error": "RuntimeError: boom"})
    out.write_text("\n".join(lines) + "\n")
    assert main(["detect", "--input", str(traces), "--out", str(out), "--tokenizer", tok]) == 0
    s = json.loads((tmp_path / "cuts.summary.json").read_text())
    assert s["traces"] == 4 and s["failures"] == 0


def test_ratio_and_limit_are_checked_when_parsed(tmp_path, traces, tok, capsys):
    for flag, value, msg in (("--ratio", "7", "--ratio must be in (0, 1]"), ("--ratio", "0", "--ratio must be in (0, 1]"),
                             ("--limit", "0", "--limit must be >= 1")):
        assert main(["detect", "--detector", "ratio", "--input", str(traces), "--out", str(tmp_path / "o.jsonl"),
                     "--tokenizer", tok, flag, value]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_an_output_is_never_an_input(tmp_path, traces, tok):
    before = traces.read_bytes()
    r = _cli("calibrate", "--input", str(traces), "--out", str(traces), "--tokenizer", tok)
    assert r.returncode == 2 and "also an input" in r.stderr
    r = _cli("detect", "--input", str(traces), "--out", str(traces), "--tokenizer", tok)
    assert r.returncode == 2 and "also an input" in r.stderr
    assert traces.read_bytes() == before


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_input_is_an_error(tmp_path, tok, content, capsys):
    p = tmp_path / "empty.jsonl"
    p.write_text(content)
    assert main(["measure", "--input", str(p), "--tokenizer", tok]) == 2
    assert f"{p}: no traces" in capsys.readouterr().err
    assert main(["detect", "--input", str(p), "--out", str(tmp_path / "o.jsonl"), "--tokenizer", tok]) == 2
    assert f"{p}: no traces" in capsys.readouterr().err


def test_non_utf8_names_file_and_line(tmp_path, tok, capsys):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"problem": "p", "answer": "1", "response": "ok"}\n{"problem": "caf\xe9", "answer": "1", "response": "x"}\n')
    assert main(["measure", "--input", str(p), "--tokenizer", tok]) == 2
    err = capsys.readouterr().err
    assert f"{p}:2: not UTF-8" in err


def test_mistyped_tokenizer_path_fails_at_once(tmp_path, traces):
    t0 = time.monotonic()
    r = _cli("measure", "--input", str(traces), "--tokenizer", "../shraed/models/deepseek-r1-distill-qwen-tokenizer")
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    assert time.monotonic() - t0 < 40  # no hub retries (49 s before)


def test_detect_and_measure_say_what_their_numbers_mean(tmp_path, traces, tok, capsys):
    assert main(["detect", "--input", str(traces), "--out", str(tmp_path / "c.jsonl"), "--tokenizer", tok, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 traces end with a correct final answer." in out
    assert "removable share" in out and "second half" in out and "cap" in out
    assert main(["measure", "--input", str(traces), "--tokenizer", tok, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "t.jsonl: 4 of 4 traces correct" in out and "Removable share: the share of the thinking" in out
