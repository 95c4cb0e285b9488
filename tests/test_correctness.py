"""The correctness pass: each test pins a place where a run used to give a wrong number or hang
without saying so (see docs/method.md and docs/training.md for the options)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from rearl.core.revision import kept_prefix_ids  # noqa: E402
from rearl.core.rewards import (  # noqa: E402
    CORRECT_KEY,
    FINISHED_KEY,
    AccuracyReward,
    KimiLengthReward,
    RefinedLengthReward,
    gold_answers,
    normalize_gold,
    read_gold,
)
from rearl.core.text import segment  # noqa: E402
from rearl.train.config import load_config  # noqa: E402


# -- 1. unfinished thinking never scores -----------------------------------------------------------
def test_truncated_r1_completion_scores_zero_when_the_template_opens_thinking(r1_tok):
    import copy

    from rearl.core.prompts import opens_thinking
    from rearl.train.trainer import build_reward_funcs

    assert not opens_thinking(r1_tok)  # the template in ../shared predates the one that opens <think>
    tok = copy.deepcopy(r1_tok)  # the current R1-distill template ends the generation prompt with <think>
    tok.chat_template = r1_tok.chat_template.replace(
        "add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}",
        "add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}")
    assert opens_thinking(tok)
    cut_off = "Let me see, maybe \\boxed{5}. Wait"
    assert AccuracyReward()(completions=[cut_off], answer=["5"]) == [1.0]  # plain text: searched whole
    _, _, cfg = load_config(None, ["output_dir=/tmp/x", "use_cpu=true", "bf16=false", "reflection_threshold=100"])
    assert cfg.require_think_close is None  # default: resolved from the chat template
    assert build_reward_funcs(cfg, r1_tok)[0](completions=[cut_off], answer=["5"]) == [1.0]
    acc = build_reward_funcs(cfg, tok)[0]
    assert acc(completions=[cut_off], answer=["5"]) == [0.0]
    assert acc(completions=[cut_off + "\n</think>\n\n\\boxed{5}"], answer=["5"]) == [1.0]


@pytest.mark.parametrize("size", ["1.5B", "7B"])
def test_r1_recipes_require_the_closing_tag(size):
    _, _, cfg = load_config(f"recipes/DeepSeek-R1-Distill-Qwen-{size}/rea_rl.yaml", ["use_cpu=true", "bf16=false"])
    assert cfg.require_think_close is True


def test_accuracy_knows_whether_the_completion_reached_eos():
    acc = AccuracyReward(require_eos=True, eos_token_ids=[2])
    comps = ["</think>\\boxed{5}", "</think>\\boxed{5}"]
    assert acc(completions=comps, completion_ids=[[7, 7, 2], [7, 7, 7]], answer=["5", "5"]) == [1.0, 0.0]
    assert acc(completions=comps, answer=["5", "5"], **{FINISHED_KEY: [False, True]}) == [0.0, 1.0]
    with pytest.raises(ValueError, match="eos_token_ids"):
        AccuracyReward(require_eos=True)


# -- 3. length rewards over the rows that survive ------------------------------------------------------
@pytest.mark.parametrize("cls", [RefinedLengthReward, KimiLengthReward])
def test_length_rewards_ignore_rows_dropped_afterwards(cls):
    comps = ["</think>\\boxed{4}"] * 4
    ids = [[1] * 10, [1] * 20, [1] * 30, [1] * 5]  # row 3: a correct but unfinished revision, dropped later
    kw = dict(problem=["p"] * 4, answer=["4"] * 4)
    r = cls()
    with_flag = r(completions=comps, completion_ids=ids, revision_failed=[False, False, False, True], **kw)
    without = r(completions=comps[:3], completion_ids=ids[:3], **{k: v[:3] for k, v in kw.items()})
    assert with_flag[:3] == pytest.approx(without)
    assert r(completions=comps, completion_ids=ids, **kw)[:3] != pytest.approx(without)  # the row did shift them


# -- 7. a dataset column named `correct` does not override the verifier ----------------------------------
def test_dataset_column_named_correct_is_ignored():
    acc = AccuracyReward()
    assert acc(completions=["</think>\\boxed{5}"], answer=["4"], correct=[True]) == [0.0]
    assert acc(completions=["</think>\\boxed{5}"], answer=["4"], **{CORRECT_KEY: [True]}) == [1.0]


# -- 8. one gold reader, a clear error without a gold column -------------------------------------------
def test_one_gold_reader():
    assert read_gold({"solution": "so it is \\boxed{12}."}) == "12"
    assert read_gold({"answer": "$\\frac{1}{2}$", "solution": "x"}) == "\\frac{1}{2}"
    assert gold_answers(2, {"solution": ["\\boxed{3}", "4"]}) == ["3", "4"]
    assert normalize_gold("\\(x^2\\)") == "x^2" and normalize_gold(7) == "7"
    with pytest.raises(ValueError, match="no gold answer column"):
        read_gold({"problem": "p", "gold": "3"})


def test_trainer_refuses_a_dataset_without_gold(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.core.prompts import math_messages
    from rearl.train.trainer import REARLTrainer

    _, _, cfg = load_config(None, [f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "per_device_train_batch_size=4",
                                   "num_generations=4", "reflection_model=oracle", "reflection_threshold=20",
                                   "report_to=none"])
    ds = Dataset.from_list([{"prompt": math_messages("1+1?"), "problem": "1+1?", "gold": "2"}] * 4)
    with pytest.raises(ValueError, match="no gold answer column"):
        REARLTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=cfg, train_dataset=ds,
                     processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_solution_only_dataset_still_revises(tiny_model_dir, tmp_path):
    """A dataset with only `solution` used to make every revision fail: the run silently became GRPO."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.core.prompts import math_messages
    from tests.test_trainer import LONG, WRONG, Scripted  # noqa: F401

    _, _, cfg = load_config(None, [f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "per_device_train_batch_size=4",
                                   "num_generations=4", "max_completion_length=64", "revision_max_tokens=16",
                                   "reflection_model=oracle", "reflection_threshold=20", "report_to=none",
                                   "save_strategy=no"])
    q = "What is 6 times 7?"
    ds = Dataset.from_list([{"prompt": math_messages(q), "problem": q, "solution": "6*7 = \\boxed{42}"}] * 4)
    tr = Scripted(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=cfg, train_dataset=ds,
                  processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    tr.model.train()
    tr.script_originals, tr.script_revisions = [LONG, WRONG], ["\\boxed{42}", "\\boxed{41}"]
    tr._generate_and_score_completions([dict(ds[0]) for _ in range(4)])
    m = tr._metrics["train"]
    assert m["revision/failures"][-1] == 0.0 and m["revision/accept_rate"][-1] == 0.5


# -- 4. the short-trace rule -------------------------------------------------------------------------
def test_cut_at_the_last_paragraph_drops_its_last_part(r1_tok):
    text = "<think>\nFirst part: 2 + 2 = 4.\n\nSecond part, checking: still 4.\n</think>\n\n\\boxed{4}"
    seg = segment(r1_tok, text=text)
    assert len(seg.paragraphs) == 1  # both parts are short, so they form one paragraph
    whole = kept_prefix_ids(seg, 0, "none")
    short = kept_prefix_ids(seg, 0, "drop_last_part")
    assert whole == seg.prefix_ids(0) and whole[: len(short)] == short and len(short) < len(whole)
    kept = r1_tok.decode(short)
    assert "2 + 2 = 4." in kept and "Second part" not in kept
    with pytest.raises(ValueError):
        kept_prefix_ids(seg, 0, "nope")


def test_revision_options_are_checked():
    with pytest.raises(ValueError, match="revise_without_result"):
        load_config(None, ["output_dir=/tmp/x", "use_cpu=true", "bf16=false", "reflection_threshold=1",
                           "revise_without_result=maybe"])
    with pytest.raises(ValueError, match="num_generations_eval"):  # 10. eval groups must be even too
        load_config(None, ["output_dir=/tmp/x", "use_cpu=true", "bf16=false", "reflection_threshold=1",
                           "num_generations_eval=3"])


# -- 5. a verifier that cannot work fails loudly, and no call hangs --------------------------------------
def _fake_python(tmp_path, body: str) -> str:
    p = tmp_path / "python"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def test_verifier_that_cannot_start_raises(tmp_path):
    from rearl.core.verify import VerifierError, VerifierPool

    with VerifierPool(workers=1, python=_fake_python(tmp_path, "exit 1")) as pool:
        with pytest.raises(VerifierError, match="cannot start"):
            pool.verify("1", "1")
        with pytest.raises(VerifierError, match="cannot start"):  # and it stays failed, saying why
            pool.submit("2", "2")
    with VerifierPool(workers=1, python=_fake_python(tmp_path, "exit 1")) as pool:
        with pytest.raises(VerifierError):  # the reward does not turn it into "every answer is wrong"
            AccuracyReward(pool=pool)(completions=["</think>\\boxed{1}"], answer=["1"])


def test_worker_hanging_at_import_is_counted_and_fails(tmp_path):
    from rearl.core.verify import VerifierError, VerifierPool

    with VerifierPool(workers=1, python=_fake_python(tmp_path, "exec sleep 60"), startup_timeout=0.5) as pool:
        fut = pool.submit("1", "1")
        with pytest.raises(VerifierError, match="hangs at start"):
            fut.result(timeout=20)
        assert pool.stats["startup_failures"] == 3


def test_close_resolves_items_already_taken(tmp_path):
    from rearl.core.verify import VerifierError, VerifierPool

    pool = VerifierPool(workers=1, python=_fake_python(tmp_path, "exec sleep 60"), startup_timeout=60)
    futs = [pool.submit(str(i), str(i)) for i in range(5)]  # no worker gets ready: they wait in the dispatcher
    import time

    time.sleep(0.3)
    pool.close()
    for f in futs:
        with pytest.raises(VerifierError, match="closed"):
            f.result(timeout=10)
    with pytest.raises(VerifierError, match="closed"):
        pool.submit("9", "9")


# -- 9. every rank sends the same number of revision inputs ------------------------------------------------
def test_revision_inputs_are_padded_to_the_busiest_rank(tiny_model_dir, tmp_path):
    from rearl.core.groups import Sample
    from tests.test_trainer import LONG, WRONG, make

    tr, inputs, tok = make(tiny_model_dir, tmp_path)
    seen = []
    other_rank = {"n": 5}

    def sample(prompt_ids, n, max_new_tokens):
        if max_new_tokens == tr.max_completion_length:
            texts = [LONG, WRONG]
        else:
            seen.append(len(prompt_ids))
            texts = ["\\boxed{42}", "\\boxed{41}"] + ["\\boxed{0}"] * (len(prompt_ids) - 2)
        return [Sample(tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], True) for t in texts]

    tr._sample = sample
    tr._collective_generation = lambda: True
    tr._rank_counts = lambda n: [n, other_rank["n"]]
    out = tr._generate_and_score_completions(inputs)
    assert seen == [5]  # 2 own inputs + 3 fillers, as many as the other rank sends
    acc = list(tr._logs["rewards"]["accuracy"])[-4:]
    assert acc[:3] == [1.0, 1.0, 0.0]  # each revision got its own answer, not a filler's or another rank's
    assert out["advantages"].shape[0] == 4
    # a rank with no revision input still joins the collective call
    seen.clear()
    tr._score = lambda problems, golds, segs: [(None, "down")] * len(segs)
    tr._generate_and_score_completions(inputs)
    assert seen == [5]


# -- 11. TRL's own group statistics leave NaN rows out ------------------------------------------------------
def test_trl_group_statistics_exclude_nan_rows(tiny_model_dir, tmp_path):
    """`_calculate_rewards` marks dropped rows NaN and relies on TRL's nan-aware mean/std; if a TRL
    upgrade changes that, this fails."""
    import math
    import statistics

    import torch

    from tests.test_trainer import LONG, WRONG, make

    tr, inputs, _ = make(tiny_model_dir, tmp_path)
    tr.script_originals, tr.script_revisions = [LONG, WRONG], ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)  # TRL's code computes the advantages
    rewards = torch.tensor([list(tr._logs["rewards"][n])[-4:] for n in tr.reward_func_names]).T
    assert torch.isnan(rewards[3]).all() and not torch.isnan(rewards[:3]).any()
    total = (rewards[:3] * tr.reward_weights.unsqueeze(0)).sum(dim=1).tolist()
    mean, sd = statistics.fmean(total), statistics.stdev(total)  # over the three rows that stay
    adv = out["advantages"].tolist()
    assert adv[:3] == pytest.approx([(t - mean) / (sd + 1e-4) for t in total], abs=1e-5)
    assert adv[3] == 0.0 and not any(math.isnan(a) for a in adv)


# -- 12. smaller ones ----------------------------------------------------------------------------------
def test_a_candidate_with_both_words_counts_for_neither():
    import math

    from rearl.reflector.prompt import p_result_at

    cands = [(" Result", math.log(0.5)), ("ThinkResult", math.log(0.3)), (" Think", math.log(0.2))]
    assert p_result_at(cands) == pytest.approx(0.5 / 0.7)


def test_detect_survives_a_scorer_that_raises(tmp_path, r1_tok):
    import json

    from rearl.offline.detect import DetectConfig, detect_file

    class Flaky:
        calls = 0

        def score(self, problems, paragraphs, mode="forward"):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConnectionError("reflection server went away")
            from rearl.reflector.prompt import ScoreOutcome

            return [ScoreOutcome([0.0] * len(p), len(p), len(p)) for p in paragraphs]

    inp = tmp_path / "t.jsonl"
    text = "<think>\n" + "Two plus two is four, and I write it down carefully here. " * 3 + "\n</think>\n\n\\boxed{4}"
    inp.write_text("".join(json.dumps({"id": str(i), "problem": "2+2", "answer": "4", "response": text}) + "\n"
                           for i in range(4)))
    r1_dir = r1_tok.name_or_path
    cfg = DetectConfig(input=str(inp), out=str(tmp_path / "o.jsonl"), tokenizer=r1_dir, detector="model",
                       batch_size=2, window_tokens=0)
    s = detect_file(cfg, progress=False, scorer=Flaky())
    assert s["traces"] == 4 and s["failures"] == 2  # the first chunk failed, the second was scored
    recs = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert sum("reflection server went away" in r.get("error", "") for r in recs) == 2


def test_eos_text_never_reaches_the_reflection_model(tiny_model_dir, tmp_path):
    from tests.test_trainer import make

    tr, inputs, tok = make(tiny_model_dir, tmp_path)
    seen = []
    original_score = tr._score

    def spy(problems, golds, segs):
        seen.extend(p.text for s in segs for p in s.paragraphs)
        return original_score(problems, golds, segs)

    tr._score = spy
    unfinished = "<think>\nI am still working this out and have not closed my thinking at all, 6 times 7 is 42."
    tr.script_originals, tr.script_revisions = [unfinished, unfinished], ["\\boxed{42}", "\\boxed{42}"]
    tr._generate_and_score_completions(inputs)
    assert seen and not any(tok.eos_token in t for t in seen)


def test_revise_without_result_skip(tiny_model_dir, tmp_path):
    from tests.test_trainer import LONG, WRONG, make

    tr, inputs, _ = make(tiny_model_dir, tmp_path, "revise_without_result=skip")
    tr.script_originals, tr.script_revisions = [LONG, WRONG], ["\\boxed{42}"]  # WRONG states no correct answer
    out = tr._generate_and_score_completions(inputs)
    m = tr._metrics["train"]
    assert m["revision/skipped_no_result"][-1] == 1.0 and m["revision/failures"][-1] == 0.0
    assert out["advantages"].tolist()[3] == 0.0  # no revision: the row is dropped


# -- 10. each rank holds whole groups -------------------------------------------------------------------
def test_rollout_refuses_broken_groups(tiny_model_dir, tmp_path):
    from tests.test_trainer import make

    tr, inputs, _ = make(tiny_model_dir, tmp_path)
    other = dict(inputs[0], prompt=[{"role": "user", "content": "What is 1 + 1?"}])
    with pytest.raises(RuntimeError, match="whole groups"):
        tr._rea_rollout([inputs[0]["prompt"], other["prompt"], inputs[0]["prompt"], other["prompt"]])
