"""`rearl data filter`: the problems a model solves at least once in N samples, through rearl eval's sampling."""

import json

import pytest

from rearl.offline.filter import FilterConfig, filter_file


class ByParity:
    """Answers 18 on even seeds and 7 on odd ones (a policy with per-sample seeds, as vLLM)."""

    def __init__(self, tok):
        self.tokenizer = tok

    def generate(self, prompts, max_new_tokens=256, temperature=0.6, top_p=1.0, top_k=50, seed=None, seeds=None):
        from rearl.core.revision import Generation

        return [Generation(self.tokenizer(f"</think> \\boxed{{{18 if s % 2 == 0 else 7}}}", add_special_tokens=False)
                           ["input_ids"] + [self.tokenizer.eos_token_id], "", True) for s in seeds]


def test_filter_keeps_the_solved_problems(tmp_path, r1_tok, pool):
    src = tmp_path / "train.jsonl"
    rows = [{"problem": "a?", "answer": "18", "extra": 1}, {"problem": "b?", "answer": "5"},
            {"problem": "c?", "answer": ""}, {"problem": "d?", "answer": "7", "type": "x"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kept.jsonl"
    cfg = FilterConfig(input=str(src), model="unused", out=str(out), samples=4, max_tokens=16)
    s = filter_file(cfg, progress=False, policy=ByParity(r1_tok), pool=pool)
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert kept == [rows[0], rows[3]]  # as they were, in input order; "5" is never answered
    assert (s["problems"], s["without_gold"], s["kept"]) == (3, 1, 2)
    assert sum(s["correct_samples_histogram"].values()) == 3 and s["correct_samples_histogram"]["0"] == 1
    # at least 4 of 4: only a problem every sample solved stays (none does: the answers alternate by seed)
    strict = filter_file(FilterConfig(**{**cfg.__dict__, "min_correct": 4, "out": str(tmp_path / "k4.jsonl")}),
                         progress=False, policy=ByParity(r1_tok), pool=pool)
    assert strict["kept"] == strict["correct_samples_histogram"]["4"] == s["correct_samples_histogram"]["4"]
    with pytest.raises(ValueError, match="input file"):
        filter_file(FilterConfig(**{**cfg.__dict__, "out": str(src)}), progress=False, policy=ByParity(r1_tok))
