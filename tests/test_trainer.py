"""REARLTrainer on a tiny model: scripted rollouts pin group assembly, policies and advantages
against TRL's own computation; short real runs cover every CPU recipe and resume."""

import json
import math
import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from rearl.core.groups import Sample, group_advantages  # noqa: E402
from rearl.core.prompts import math_messages  # noqa: E402
from rearl.train.config import load_config  # noqa: E402
from rearl.train.trainer import REARLTrainer  # noqa: E402

from _scripted import LONG, WRONG  # noqa: E402


class Scripted(REARLTrainer):
    """Replaces sampling with scripted texts so correctness is controlled."""

    script_originals: list = []
    script_revisions: list = []

    def _sample(self, prompt_ids, n, max_new_tokens):
        tok = self.processing_class
        texts = self.script_originals if max_new_tokens == self.max_completion_length else self.script_revisions
        assert len(texts) == len(prompt_ids) * n
        return [Sample(tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], True) for t in texts]


def make(tiny_model_dir, tmp_path, *overrides):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, cfg = load_config(None, [
        f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "per_device_train_batch_size=4", "num_generations=4",
        "max_completion_length=64", "revision_max_tokens=16", "report_to=none", "save_strategy=no",
        "reflection_model=oracle", "reflection_threshold=20", "gradient_checkpointing=false", *overrides])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ds = Dataset.from_list([{"prompt": math_messages("What is 6 times 7?"), "problem": "What is 6 times 7?", "answer": "42"}] * 4)
    tr = Scripted(model=model, args=cfg, train_dataset=ds, processing_class=tok)
    tr.model.train()
    return tr, [dict(ds[0]) for _ in range(4)], tok


def expected_advantages(out, tr):
    rewards = torch.tensor([list(tr._logs["rewards"][n])[-4:] for n in tr.reward_func_names]).T
    total = (rewards * tr.reward_weights.unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards).all(dim=1)] = math.nan
    return group_advantages(total.tolist(), 4)


def test_drop_policy_groups_and_advantages(tiny_model_dir, tmp_path):
    tr, inputs, tok = make(tiny_model_dir, tmp_path)
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)
    ids = [row[m.bool()].tolist() for row, m in zip(out["completion_ids"], out["completion_mask"])]
    o1 = tok(LONG, add_special_tokens=False)["input_ids"]
    # rows: original_1, revised_1, original_2, revised_2; the revision keeps o1's own ids up to the cut
    assert ids[0][:-1] == o1
    cut_text = tok.decode(ids[1])
    assert "So the answer is 42." in cut_text and "Wait, let me check" not in cut_text
    kept = ids[1][: len(ids[1]) - 1]
    prefix_len = next(k for k in range(len(kept)) if kept[k] != o1[k])
    assert prefix_len > 10 and ids[1][:prefix_len] == o1[:prefix_len]
    acc = list(tr._logs["rewards"]["accuracy"])[-4:]
    assert acc[:3] == [1.0, 1.0, 0.0] and math.isnan(acc[3])  # the wrong revision is dropped
    adv = out["advantages"].tolist()
    assert adv[3] == 0.0
    assert adv == pytest.approx(expected_advantages(out, tr), abs=1e-5)
    assert adv[1] > adv[0] > adv[2]  # the short correct revision beats its long original
    live = [m.bool() for m in out["completion_mask"]]
    assert out["tool_mask"][1][live[1]].tolist() == [1] * len(ids[1])  # scaffold trained on, as the authors
    assert (out["tool_mask"][3] * out["completion_mask"][3]).sum().item() == 0  # the dropped revision: out of the loss
    m = tr._metrics["train"]
    assert m["revision/accept_rate"][-1] == 0.5 and m["groups/dropped_rows"][-1] == 0.25


def _loss_and_grads(tr, batch):
    tr.model.zero_grad()
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in tr.model.parameters() if p.grad is not None]


def test_dropped_revision_is_out_of_the_loss(tiny_model_dir, tmp_path):
    """Loss and gradients with a dropped revision equal those of the batch without it (KL included)."""
    tr, inputs, _ = make(tiny_model_dir, tmp_path, "loss_type=bnpo", "beta=0.04")
    tr.current_gradient_accumulation_steps = 1
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)
    loss_mask = out["tool_mask"] * out["completion_mask"]
    assert loss_mask[3].sum().item() == 0 and loss_mask[:3].sum().item() > 0
    keep = torch.tensor([0, 1, 2])
    without = {k: v[keep] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 4 else v for k, v in out.items()}
    loss_all, grads_all = _loss_and_grads(tr, out)
    loss_kept, grads_kept = _loss_and_grads(tr, without)
    assert loss_all == pytest.approx(loss_kept, rel=1e-5, abs=1e-7)
    assert len(grads_all) == len(grads_kept) > 0
    for a, b in zip(grads_all, grads_kept):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_drop_needs_a_token_normalised_loss(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="averages over rows"):
        make(tiny_model_dir, tmp_path, "loss_type=grpo")


def test_duplicate_policy_and_scaffold_mask(tiny_model_dir, tmp_path):
    tr, inputs, tok = make(tiny_model_dir, tmp_path, "failed_revision_policy=duplicate_original", "mask_scaffold_tokens=true")
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)
    ids = [row[m.bool()].tolist() for row, m in zip(out["completion_ids"], out["completion_mask"])]
    assert ids[3] == ids[2]  # the failed revision became a copy of its original
    acc = list(tr._logs["rewards"]["accuracy"])[-4:]
    assert acc == [1.0, 1.0, 0.0, 0.0]
    assert out["advantages"].tolist() == pytest.approx(expected_advantages(out, tr), abs=1e-5)
    mask = out["tool_mask"][1][out["completion_mask"][1].bool()].tolist()
    scaf = [t for t, k in zip(ids[1], mask) if k == 0]
    assert "</think>" in tok.decode(scaf) and "**Final Answer:**" in tok.decode(scaf)
    assert out["tool_mask"][0][out["completion_mask"][0].bool()].tolist() == [1] * len(ids[0])


def test_all_wrong_group_gets_zero_advantage(tiny_model_dir, tmp_path):
    tr, inputs, _ = make(tiny_model_dir, tmp_path)
    tr.script_originals = [WRONG, WRONG.replace("41", "40")]
    tr.script_revisions = ["\\boxed{41}", "\\boxed{40}"]
    out = tr._generate_and_score_completions(inputs)
    assert out["advantages"].tolist() == [0.0] * 4
    tr2, inputs, _ = make(tiny_model_dir, tmp_path / "k", "zero_accuracy_groups=keep", "failed_revision_policy=duplicate_original")
    tr2.script_originals = [WRONG, "<think>\nForty it is, final.\n</think>\n\n\\boxed{40}"]
    tr2.script_revisions = ["\\boxed{41}", "\\boxed{40}"]
    out = tr2._generate_and_score_completions(inputs)
    assert any(a != 0.0 for a in out["advantages"].tolist())  # the reflection reward still differs


def test_reflection_model_failure_skips_revision(tiny_model_dir, tmp_path):
    class Down:
        def score(self, *a, **k):
            raise ConnectionError("reflection server down")

    tr, inputs, _ = make(tiny_model_dir, tmp_path, "reflection_model=http://127.0.0.1:9",
                         f"reflection_tokenizer={tiny_model_dir}")
    assert tr.reflection_scorer.base_url == "http://127.0.0.1:9"  # built without contacting the server
    tr.reflection_scorer = Down()
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = []
    out = tr._generate_and_score_completions(inputs)
    assert tr._metrics["train"]["revision/failures"][-1] == 2.0
    adv = out["advantages"].tolist()
    assert adv[1] == 0.0 and adv[3] == 0.0 and adv[0] != 0.0


RECIPES = ["grpo", "grpo_len", "rea_rl", "rea_rl_no_reflection_model", "rea_rl_no_reflection_reward"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_cpu_recipe_runs_two_steps(recipe, tiny_model_dir, tmp_path, shared):
    from rearl.train.run import train

    m, d, c = load_config(f"recipes/cpu/{recipe}.yaml", [
        f"model_name_or_path={tiny_model_dir}", f"reflection_model={tiny_model_dir}", f"output_dir={tmp_path}",
        f"train_files=[{shared}/data/train/deepscaler_train_math.jsonl]", "max_train_samples=8",
        "max_completion_length=16", "revision_max_tokens=8"])
    last = train(m, d, c)
    assert last["step"] == 2
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "rearl_run.json").exists()


def test_gpu_recipes_parse_with_spec_values():
    for size in ("7B", "1.5B"):
        base = f"recipes/DeepSeek-R1-Distill-Qwen-{size}"
        _, _, c = load_config(f"{base}/rea_rl.yaml", ["bf16=false", "use_vllm=false"])
        assert (c.num_generations, c.parallel_samples, c.revision_max_tokens, c.temperature) == (8, 4, 256, 0.6)
        assert c.per_device_train_batch_size * c.gradient_accumulation_steps * 2 == 128  # 2 training GPUs
        assert c.beta == 0.04 and c.learning_rate == 2e-5 and c.reflection_threshold == 225.09
        m, _, g = load_config(f"{base}/grpo.yaml", ["bf16=false", "use_vllm=false"])
        assert not g.revision and g.per_device_train_batch_size * g.gradient_accumulation_steps * 2 == 64
        assert m.use_peft and m.lora_r == 16 and m.lora_alpha == 32
        _, _, n = load_config(f"{base}/rea_rl_no_reflection_model.yaml", ["bf16=false", "use_vllm=false"])
        assert not n.revision and n.reflection_reward
        _, _, r = load_config(f"{base}/rea_rl_no_reflection_reward.yaml", ["bf16=false", "use_vllm=false"])
        assert r.revision and not r.reflection_reward


def test_unknown_recipe_key_is_an_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("include: %s\nenforce_eager: true\n" % os.path.abspath("recipes/cpu/common.yaml"))
    with pytest.raises(ValueError, match="enforce_eager"):
        load_config(str(p))


def test_resume_from_checkpoint(tiny_model_dir, tmp_path, shared):
    from rearl.train.run import train

    base = [f"model_name_or_path={tiny_model_dir}", f"output_dir={tmp_path}", "reflection_model=oracle",
            f"train_files=[{shared}/data/train/deepscaler_train_math.jsonl]", "max_train_samples=8",
            "max_completion_length=8", "revision_max_tokens=4", "save_strategy=steps", "save_steps=1"]
    m, d, c = load_config("recipes/cpu/rea_rl.yaml", base + ["max_steps=2"])
    train(m, d, c)
    assert (tmp_path / "checkpoint-2").exists()
    m, d, c = load_config("recipes/cpu/rea_rl.yaml", base + ["max_steps=3"])
    last = train(m, d, c, resume=True)
    assert last["step"] == 3
    import json

    state = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == [1, 2, 3]  # steps 1-2 come from the first run; only step 3 was trained now


def test_flaky_reflection_model_fails_only_its_samples(tiny_model_dir, tmp_path, shared):
    """Real training steps with a real reflection model (the tiny model, scored in process) that fails on
    purpose for half of the samples, in turn by a malformed reply, too few labels and, on one whole call, by
    raising: exactly those revisions fail (`revision/failures`), the others are made, training goes on."""
    from rearl.backends import reflection_scorer
    from rearl.reflector.prompt import ScoreOutcome
    from rearl.train.run import train

    class Flaky:
        def __init__(self, inner):
            self.inner, self.calls = inner, []

        def score(self, problems, paragraphs, mode):
            k = len(self.calls)
            if k == 1:
                self.calls.append([(True, len(ps)) for ps in paragraphs])
                raise RuntimeError("reflection model crashed on purpose")
            real = self.inner.score(problems, paragraphs, mode)
            out, rec = [], []
            for i, (ps, r) in enumerate(zip(paragraphs, real)):
                fail = i % 2 == 1 and len(ps) > 0
                if fail and (i // 2 + k) % 2:
                    r = ScoreOutcome(None, len(ps), r.n_shown, reply="[1]. Maybe", error="malformed reply: no label lines")
                elif fail:
                    r = ScoreOutcome(r.p_result[: r.n_shown - 1], len(ps), r.n_shown)  # the last label missing
                out.append(r)
                rec.append((fail, len(ps)))
            self.calls.append(rec)
            return out

    m, d, c = load_config("recipes/cpu/rea_rl.yaml", [
        f"model_name_or_path={tiny_model_dir}", f"reflection_model={tiny_model_dir}", f"output_dir={tmp_path}",
        f"train_files=[{shared}/data/train/deepscaler_train_math.jsonl]", "max_train_samples=8",
        "max_completion_length=32", "revision_max_tokens=8", "max_steps=3", "logging_steps=1",
        "per_device_train_batch_size=8", "num_generations=4", "reflection_mode=forward", "save_strategy=steps",
        "save_steps=3"])
    scorer = Flaky(reflection_scorer(tiny_model_dir))
    last = train(m, d, c, reflection_scorer=scorer)
    assert last["step"] == 3
    state = json.loads((tmp_path / "checkpoint-3" / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "revision/failures" in h]
    assert len(scorer.calls) == 3 and len(logs) == 3
    for call, h in zip(scorer.calls, logs):
        expected = sum(1 for failed, n in call if failed or n == 0)  # a sample with no paragraph cannot be cut
        assert h["revision/failures"] == expected, (call, h)
        assert math.isfinite(h["loss"])
    assert logs[1]["revision/failures"] == len(scorer.calls[1])  # the crash: the whole step's samples
    for call, h in ((scorer.calls[0], logs[0]), (scorer.calls[2], logs[2])):
        assert 0 < sum(f for f, _ in call) < len(call)  # half failed on purpose...
        assert h["revision/accept_rate"] >= 0 and h["revision/failures"] < len(call)  # ...the rest were revised


def _through_trl_micro_batches(tr, inputs, seed):
    """One generation batch through TRL's own `_prepare_inputs` (rollout, shuffle, split into
    steps_per_generation micro-batches) and `compute_loss`, gradients accumulated as in training."""
    torch.manual_seed(seed)
    tr._buffered_inputs, tr._step = None, 0
    spg = tr.args.steps_per_generation
    tr.current_gradient_accumulation_steps = spg
    batches = []
    for step in range(spg):
        tr._step = step
        batches.append(tr._prepare_inputs(inputs))
    tr.model.zero_grad()
    for b in batches:
        tr.compute_loss(tr.model, b).backward()
    return batches, [p.grad.detach().clone() for p in tr.model.parameters() if p.grad is not None]


def _same(grads_a, grads_b):
    return all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(grads_a, grads_b))


def test_drop_is_exact_across_shuffled_micro_batches(tiny_model_dir, tmp_path):
    """TRL shuffles the generation batch before splitting it into micro-batches. With loss_type dapo the
    accumulated gradient equals that of the batch without the dropped revision, whatever row shares its
    micro-batch; bnpo (per-micro-batch normalisation) gives the dropped row's partner more weight."""
    tr, inputs, _ = make(tiny_model_dir, tmp_path, "per_device_train_batch_size=2", "gradient_accumulation_steps=2",
                         "loss_type=dapo", "beta=0.04")
    assert tr.args.steps_per_generation == 2
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    seen = []
    rollout = tr._generate_and_score_completions
    tr._generate_and_score_completions = lambda b: seen.append(rollout(b)) or seen[-1]
    partners, bnpo_differs = set(), False
    for seed in range(6):
        tr.loss_type = "dapo"
        batches, grads = _through_trl_micro_batches(tr, inputs, seed)
        full = seen[-1]
        assert (full["tool_mask"][3] * full["completion_mask"][3]).sum() == 0  # row 3: the dropped revision
        keep = torch.tensor([0, 1, 2])
        without = {k: v[keep] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 4 else v for k, v in full.items()}
        tr.model.zero_grad()
        tr.compute_loss(tr.model, without).backward()  # one batch of the three surviving rows (cGA = spg: N tokens)
        ref = [p.grad.detach().clone() for p in tr.model.parameters() if p.grad is not None]
        assert _same(grads, ref), f"seed {seed}: dapo micro-batches differ from the batch without the dropped row"
        for b in batches:  # which row shared the dropped row's micro-batch
            rows = [int(r) for r in (b["tool_mask"] * b["completion_mask"]).sum(dim=1)]
            if 0 in rows:
                partners.add(max(rows))
        tr.loss_type = "bnpo"
        _, grads_bnpo = _through_trl_micro_batches(tr, inputs, seed)
        bnpo_differs |= not _same(grads_bnpo, ref)
    assert len(partners) >= 2  # the shuffle put different rows beside the dropped one
    assert bnpo_differs


def test_drop_refuses_bnpo_over_several_micro_batches(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="whole generation batch"):
        make(tiny_model_dir, tmp_path, "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "loss_type=bnpo")
    # one micro-batch per generation batch on one process: bnpo's normaliser is dapo's, accepted
    make(tiny_model_dir, tmp_path, "loss_type=bnpo")
    # duplicate_original drops nothing
    make(tiny_model_dir, tmp_path, "per_device_train_batch_size=2", "gradient_accumulation_steps=2", "loss_type=bnpo",
         "failed_revision_policy=duplicate_original")


def test_true_lengths_are_logged(tiny_model_dir, tmp_path):
    """TRL's completions/mean_length sums the loss mask: a dropped revision counts as 0 tokens. The
    lengths/* metrics log what the policy wrote."""
    tr, inputs, tok = make(tiny_model_dir, tmp_path)
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)
    n = [int(m.sum()) for m in out["completion_mask"]]  # rows: original_1, revised_1, original_2, revised_2 (dropped)
    assert n[0] == len(tok(LONG, add_special_tokens=False)["input_ids"]) + 1
    m = tr._metrics["train"]
    assert m["lengths/samples/mean"][-1] == pytest.approx((n[0] + n[2]) / 2)
    assert m["lengths/samples/min"][-1] == min(n[0], n[2]) and m["lengths/samples/max"][-1] == max(n[0], n[2])
    assert m["lengths/samples/finished_mean"][-1] == pytest.approx((n[0] + n[2]) / 2)
    assert m["lengths/samples/finished_share"][-1] == 1.0
    assert m["lengths/revisions/mean"][-1] == n[1]
    assert m["lengths/trained/mean"][-1] == pytest.approx((n[0] + n[1] + n[2]) / 3)
    # what TRL logs: the dropped row as 0 tokens
    assert m["completions/mean_length"][-1] == pytest.approx((n[0] + n[1] + n[2]) / 4)


def test_true_lengths_without_revision_match_trl(tiny_model_dir, tmp_path):
    tr, inputs, _ = make(tiny_model_dir, tmp_path, "revision=false", "num_generations=4")
    tr.script_originals = [LONG, WRONG, LONG, WRONG]
    out = tr._generate_and_score_completions(inputs)
    m = tr._metrics["train"]
    assert "lengths/revisions/mean" not in m
    assert m["lengths/samples/mean"][-1] == pytest.approx(m["completions/mean_length"][-1])
    assert m["lengths/samples/mean"][-1] == pytest.approx(float(out["completion_mask"].sum()) / 4)


def test_verifier_timeouts_are_logged_and_warned(tiny_model_dir, tmp_path, caplog):
    """A check that times out scores 0 like a wrong answer: the step's timeouts are logged, and a rate above
    verify_timeout_warn_rate is a warning."""
    import logging

    from rearl.core.verify import VerifierPool

    tr, inputs, _ = make(tiny_model_dir, tmp_path)
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    tr._generate_and_score_completions(inputs)
    m = tr._metrics["train"]
    assert m["verify/timeouts"][-1] == 0 and m["verify/timeout_rate"][-1] == 0.0
    with VerifierPool(workers=1, timeout=1e-6) as slow:  # every check overruns its deadline
        tr.reward_funcs[0].pool = slow
        with caplog.at_level(logging.WARNING, logger="rearl"):
            out = tr._generate_and_score_completions(inputs)
    assert m["rewards_raw/accuracy/mean"][-1] == 0.0  # LONG is right, but its check timed out
    assert m["verify/timeouts"][-1] >= 3 and m["verify/timeout_rate"][-1] > 0.5
    assert "timed out" in caplog.text and "REARL_VERIFY_TIMEOUT" in caplog.text
    assert out["advantages"].shape[0] == 4


def test_sampling_drift_is_logged_without_the_correction(tiny_model_dir, tmp_path):
    """With vLLM and vllm_importance_sampling_correction off, the trainer-vs-sampler log-prob difference TRL
    no longer logs is logged per token and per sequence (what the correction would have multiplied by)."""
    tr, inputs, _ = make(tiny_model_dir, tmp_path, "beta=0.0")
    tr.script_originals = [LONG, WRONG]
    tr.script_revisions = ["\\boxed{42}", "\\boxed{41}"]
    out = tr._generate_and_score_completions(inputs)
    mask = out["tool_mask"] * out["completion_mask"]
    with torch.no_grad():
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        logps, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, att, out["completion_ids"].size(1))
    out["sampling_per_token_logps"] = logps - 0.01  # a sampler 0.01 nats per token below the trainer
    tr.use_vllm, tr.vllm_importance_sampling_correction = True, False
    tr.current_gradient_accumulation_steps = 1
    tr.compute_loss(tr.model, out)
    m = tr._metrics["train"]
    lengths = mask.sum(dim=1)
    live = lengths[lengths > 0].double()
    assert m["sampling/logprob_diff/token_mean"][-1] == pytest.approx(0.01, abs=1e-5)
    assert m["sampling/logprob_diff/seq_mean"][-1] == pytest.approx(0.01 * float(live.mean()), rel=1e-3)
    assert m["sampling/logprob_diff/seq_max"][-1] == pytest.approx(0.01 * float(live.max()), rel=1e-3)
    assert m["sampling/seq_ratio_if_corrected/mean"][-1] == pytest.approx(float((0.01 * live).exp().mean()), rel=1e-3)
    tr.vllm_importance_sampling_correction = True  # then TRL logs its own ratio; ours stays out
    n = len(m["sampling/logprob_diff/token_mean"])
    out["importance_sampling_ratio"] = torch.ones_like(logps)
    tr.compute_loss(tr.model, out)
    assert len(m["sampling/logprob_diff/token_mean"]) == n
