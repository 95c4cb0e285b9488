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
