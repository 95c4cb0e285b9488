import json
import subprocess
import sys

from rearl.core.detectors import (
    answer_mentions,
    first_reflection_detect,
    oracle_detect,
    ratio_detect,
)
from rearl.core.text import segment
from rearl.offline.detect import DetectConfig, detect_file


def para(i, body):
    # each paragraph is long enough (>= 32 tokens) and ends a sentence, so it is one paragraph
    return f"Step {i}: " + "we keep working on the algebra carefully here " * 4 + body


def trace(answer_at, n=12, gold="42", tail_reflections=True):
    ps = []
    for i in range(n):
        if i == answer_at:
            ps.append(para(i, f"So the answer is {gold}."))
        elif i > answer_at and tail_reflections:
            ps.append(para(i, f"Wait, let me double-check: the total is {gold}."))
        else:
            ps.append(para(i, "nothing final yet."))
    return "\n\n".join(ps) + f"\n</think>\n\nThe answer is \\boxed{{{gold}}}."


def test_answer_mentions_kinds():
    text = "so x = 5.\n\n$$\n12\n$$\nThe answer is \\(7\\).\n\\boxed{\\frac{1}{2}} and total is 9."
    got = [m.answer for m in answer_mentions(text)]
    for a in ("5", "12", "7", "\\frac{1}{2}", "9"):
        assert a in got, (a, got)


def test_oracle_normal_cut_at_first_second_half_answer(r1_tok, pool):
    seg = segment(r1_tok, text=trace(answer_at=7))
    assert len(seg.paragraphs) == 12
    det = oracle_detect(seg, "42", pool=pool)
    assert det.result_paragraphs[0] == 7 and det.cut_paragraph == 7
    assert det.kept_char_end == seg.paragraphs[7].char_end
    # Strong ties go to the earlier paragraph; Weak waits for a second answer after a break
    assert det.positions.strong == 7


def test_oracle_first_half_answer_needs_no_second_half_flag(r1_tok, pool):
    seg = segment(r1_tok, text=trace(answer_at=2))
    assert oracle_detect(seg, "42", pool=pool).cut_paragraph == 6  # first second-half mention (n/2 = 6)
    assert oracle_detect(seg, "42", pool=pool, second_half=False).cut_paragraph == 2
    assert oracle_detect(seg, "42", pool=pool, position="strong").cut_paragraph == 2


def test_oracle_wrong_answer_falls_back_to_cap(r1_tok, pool):
    seg = segment(r1_tok, text=trace(answer_at=7, gold="41"))
    det = oracle_detect(seg, "42", pool=pool)
    assert det.result_paragraphs == [] and det.cut_paragraph == 12 - 1 - 1


def test_first_reflection_and_ratio(r1_tok):
    seg = segment(r1_tok, text=trace(answer_at=7))
    det = first_reflection_detect(seg)
    assert seg.text[det.kept_char_end :].lstrip().startswith(("Step 8", "Wait"))
    assert det.cut_paragraph in (7, 8)
    det = ratio_detect(seg, ratio=0.5)
    kept = seg.tokens.tokens_ending_by(det.kept_char_end)
    assert abs(kept / seg.think_tokens - 0.5) < 0.15
    assert seg.text[det.kept_char_end - 1] != "\n"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_detect_file_resumes_and_reports(tmp_path, r1_tok, shared):
    rows = [{"id": k, "problem": "p", "answer": "42", "response": trace(answer_at=6 + k % 3)} for k in range(6)]
    inp, out = tmp_path / "t.jsonl", tmp_path / "cuts.jsonl"
    _write(inp, rows)
    tok = str(shared / "models/deepseek-r1-distill-qwen-tokenizer")
    s = detect_file(DetectConfig(str(inp), str(out), tok, limit=3), progress=False)
    assert s["traces"] == 3
    # simulate a kill mid-write: a torn last line
    with out.open("a") as f:
        f.write('{"id": 3, "n_para')
    s = detect_file(DetectConfig(str(inp), str(out), tok), progress=False)
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == [str(k) for k in range(6)]  # nothing lost or duplicated
    assert s["traces"] == 6 and s["failures"] == 0 and s["pct_answer_kept"] == 100.0
    for r in recs:
        assert r["cut_paragraph"] == 6 + int(r["id"]) % 3
        assert 0 < r["kept_think_tokens"] < r["think_tokens"]
        assert r["final_correct"] is True
    assert json.loads((tmp_path / "cuts.summary.json").read_text())["traces"] == 6


def test_bad_input_names_file_and_line(tmp_path, shared):
    inp = tmp_path / "bad.jsonl"
    inp.write_text('{"problem": "p", "answer": "1", "response": "x"}\n{not json\n')
    r = subprocess.run(
        [sys.executable, "-m", "rearl.cli", "detect", "--input", str(inp), "--out", str(tmp_path / "o.jsonl"),
         "--tokenizer", str(shared / "models/deepseek-r1-distill-qwen-tokenizer"), "--quiet"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2 and f"{inp}:2" in r.stderr


def test_real_traces_oracle(shared, r1_tok, tmp_path):
    s = detect_file(
        DetectConfig(str(shared / "data/traces/r1_distill_qwen14b_math500_sentences.jsonl"), str(tmp_path / "c.jsonl"),
                     str(shared / "models/deepseek-r1-distill-qwen-tokenizer")),
        progress=False,
    )
    assert s["traces"] == 8 and s["failures"] == 0 and s["originally_correct"] == 7
    assert 0 < s["mean_pct_think_removed"] < 100
