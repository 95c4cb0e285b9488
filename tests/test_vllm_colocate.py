"""REARLTrainer with TRL's vLLM colocate mode on CPU (`use_vllm: true, vllm_mode: colocate`).

Runs only where vLLM is importable next to the trainer: the `.venv-colocate` venv (`make
vllm-colocate`); elsewhere (the project's .venv, `make test`) the module is skipped, saying so.

    OMP_NUM_THREADS=1 taskset -c 1 .venv-colocate/bin/python -m pytest tests/test_vllm_colocate.py

One engine for the module: a tiny random Qwen2 (head size 32, the CPU backend's smallest; tied
embeddings) with the real R1 tokenizer trains a few REA-RL steps (G = 2 samples + 2 revisions, oracle
cut) while a probe compares, at every rollout, the behaviour logprobs vLLM returned for each revision's
kept prefix (the original sample's own logprobs) with the trainer model's logprobs of the same tokens
at that moment; then the engine's prompt logprobs after an explicit sync, and after a change of the
tied embedding matrix. Measured numbers: docs/training.md#vllm-colocate-on-cpu.
"""

import copy
import importlib.util
import math
import os

import pytest

pytestmark = pytest.mark.slow

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not importable in this venv: these tests run in .venv-colocate "
                "(make vllm-colocate; .venv-colocate/bin/python -m pytest tests/test_vllm_colocate.py)",
                allow_module_level=True)

import torch  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from rearl.core.prompts import math_messages  # noqa: E402
from rearl.train import vllm_sync  # noqa: E402
from rearl.train.config import load_config  # noqa: E402
from rearl.train.trainer import REARLTrainer  # noqa: E402

# max |vLLM - trainer| logprob (nats, absolute), float32 on both sides. Measured on the 2-core CPU (two runs):
# kept-prefix behaviour logprobs 1.9e-6, prompt logprobs after a sync 9.5e-7, after an embed_tokens change
# 9.5e-7 (0.31 with reload_weights alone); SmolLM2-135M reached 6.2e-5 (docs/training.md). 1e-4 covers both.
LOGPROB_TOL = 1e-4
TEMPERATURE = 0.7
STEPS = 3


def token_parity(completion_ids, **_):
    """A reward with spread on a random model (none is ever correct), so the weights do move."""
    return [sum(t % 2 for t in c) / max(1, len(c)) for c in completion_ids]


def hf_logprobs(model, prompt, completion, temperature=1.0):
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return logits.log_softmax(-1).gather(1, torch.tensor(completion)[:, None])[:, 0].tolist()


def vllm_prompt_logprobs(llm, prompt, completion):
    """The engine's logprobs of `completion` after `prompt`, as prompt logprobs (temperature 1)."""
    from vllm import SamplingParams

    ids = list(prompt) + list(completion)
    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0),
                       use_tqdm=False)[0]
    return [out.prompt_logprobs[i][ids[i]].logprob for i in range(len(prompt), len(ids))]


def max_diff(a, b):
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


class Probe(REARLTrainer):
    """Records, for every rollout, each revision's kept prefix with vLLM's behaviour logprobs and the
    trainer model's logprobs of the same tokens (same weights: TRL syncs just before the rollout)."""

    initial = None
    probes: list = []

    def _rea_rollout(self, prompts):
        out = super()._rea_rollout(prompts)
        model = self.accelerator.unwrap_model(self.model)
        for r, is_rev in enumerate(out["is_revision"]):
            lp = out["logprobs"][r]
            if not is_rev or out["revision_replaced"][r] or not any(math.isnan(x) for x in lp):
                continue
            n_kept = next(k for k, x in enumerate(lp) if math.isnan(x))  # the scaffold starts with NaN
            if n_kept == 0:
                continue
            prompt, kept = out["prompt_ids"][r], out["completion_ids"][r][:n_kept]
            self.probes.append({
                "step": self.state.global_step, "prompt": prompt, "kept": kept, "vllm": lp[:n_kept],
                "trainer": hf_logprobs(model, prompt, kept, TEMPERATURE),
                "initial": hf_logprobs(self.initial, prompt, kept, TEMPERATURE),
            })
        return out


@pytest.fixture(scope="module")
def tiny_tied_dir(tmp_path_factory, r1_tok):
    from _tiny import tiny_qwen2_dir

    hidden, heads = 64, 2
    assert hidden // heads == 32  # the CPU backend's smallest head size
    return tiny_qwen2_dir(tmp_path_factory.mktemp("tiny-qwen2-tied"), r1_tok, seed=0, hidden_size=hidden,
                          intermediate_size=128, num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=1,
                          max_position_embeddings=1024)


@pytest.fixture(scope="module")
def run(tiny_tied_dir, tmp_path_factory):
    import time

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    vllm_sync.cpu_env_defaults(kv_cache_gb=1)
    out = tmp_path_factory.mktemp("colocate-run")
    _, _, cfg = load_config(None, [
        f"output_dir={out}", "use_cpu=true", "bf16=false", "seed=0", "report_to=none", "save_strategy=no",
        "logging_steps=1", "gradient_checkpointing=false", f"max_steps={STEPS}", "learning_rate=1e-3",
        "per_device_train_batch_size=4", "num_generations=4", "max_completion_length=24", "revision_max_tokens=8",
        f"temperature={TEMPERATURE}", "top_p=1.0", "top_k=0", "beta=0.0", "loss_type=dapo",
        "reflection_model=oracle", "reflection_reward=false", "length_reward=none", "short_trace_rule=none",
        "use_vllm=true", "vllm_mode=colocate", "vllm_max_model_length=512",
        "vllm_engine_kwargs={enforce_eager: true, enable_prefix_caching: true}",
    ])
    tok = AutoTokenizer.from_pretrained(tiny_tied_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_tied_dir, dtype=torch.float32)
    qs = [("What is 6 times 7?", "42"), ("What is 2 plus 3?", "5"), ("What is 9 minus 4?", "5"), ("What is 8 over 2?", "4")]
    ds = Dataset.from_list([{"prompt": math_messages(q), "problem": q, "answer": a} for q, a in qs] * STEPS)
    Probe.initial = copy.deepcopy(model).eval()
    Probe.probes = []
    t0 = time.perf_counter()
    tr = Probe(model=model, args=cfg, train_dataset=ds, processing_class=tok, reward_funcs=[token_parity])
    t_init = time.perf_counter() - t0
    tr.train()
    t_train = time.perf_counter() - t0 - t_init
    print(f"\ntrainer init (colocated vLLM engine) {t_init:.1f} s, {STEPS} steps {t_train:.1f} s")
    return tr


def test_colocate_steps_run_with_revision(run):
    tr = run
    assert tr.state.global_step == STEPS
    assert isinstance(tr.vllm_weight_sync, vllm_sync.ReloadSync)
    assert tr.vllm_generation.sync_weights is tr.vllm_weight_sync  # the instance's, TRL's class untouched
    assert tr.vllm_weight_sync.calls == STEPS  # once before every step's rollout
    assert tr.vllm_weight_sync.tied  # the engine's lm_head is the embedding: it was reprocessed
    assert tr.vllm_generation.llm.llm_engine.model_config.dtype == torch.float32  # not "auto" -> bfloat16
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert len(logs) == STEPS and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["timing/revision_s"] > 0 for h in logs)  # every step generated revisions through vLLM
    steps = sorted({p["step"] for p in Probe.probes})
    assert steps == list(range(STEPS)), steps  # kept prefixes seen at every step, after 0, 1, 2 updates


def test_kept_prefix_behaviour_logprobs_match_trainer_after_updates(run):
    after = [p for p in Probe.probes if p["step"] >= 1]  # rollouts after at least one optimizer step
    assert after
    diff = max(max_diff(p["vllm"], p["trainer"]) for p in after)
    moved = max(max_diff(p["trainer"], p["initial"]) for p in after)
    n = sum(len(p["kept"]) for p in after)
    print(f"\nkept-prefix behaviour logprobs vs trainer (T={TEMPERATURE}), {n} tokens after an update: "
          f"max |diff| {diff:.2e}; the update itself moved them by up to {moved:.2e}")
    # TRL's own check over every sampled token of the batch (scaffold excluded), for the record
    trl = [h.get("sampling/sampling_logp_difference/max") for h in run.state.log_history if "loss" in h]
    print(f"TRL sampling_logp_difference/max per step: {trl}")
    assert moved > 20 * LOGPROB_TOL  # the weights did change: a stale engine could not pass
    assert diff <= LOGPROB_TOL


def test_prompt_logprobs_after_sync(run):
    tr = run
    model = tr.accelerator.unwrap_model(tr.model)
    tr.vllm_generation.sync_weights()  # the last optimizer step is not synced until the next rollout
    p = Probe.probes[-1]
    got = vllm_prompt_logprobs(tr.vllm_generation.llm, p["prompt"], p["kept"])
    want = hf_logprobs(model, p["prompt"], p["kept"])
    diff = max_diff(got, want)
    print(f"\nprompt logprobs of prompt + kept prefix ({len(p['kept'])} tokens) after the final sync: max |diff| {diff:.2e}")
    assert diff <= LOGPROB_TOL


def test_tied_embeddings_follow_embed_tokens(run):
    """Change embed_tokens (the tied lm_head with it), sync, compare. Also measures what a plain
    `reload_weights` leaves behind without the lm_head refresh."""
    tr = run
    llm = tr.vllm_generation.llm
    model = tr.accelerator.unwrap_model(tr.model)
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb and model.config.tie_word_embeddings
    assert "lm_head.weight" not in dict(model.named_parameters())  # so only embed_tokens is sent
    p = Probe.probes[-1]
    before = hf_logprobs(model, p["prompt"], p["kept"])
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        emb.add_(torch.randn(emb.shape, generator=g) * emb.std() * 0.5)
    want = hf_logprobs(model, p["prompt"], p["kept"])
    change = max_diff(before, want)

    # a plain reload, without the adapter's lm_head refresh
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": vllm_sync.policy_weights(model)})
    llm.reset_prefix_cache()
    stale = max_diff(vllm_prompt_logprobs(llm, p["prompt"], p["kept"]), want)

    tr.vllm_generation.sync_weights()
    diff = max_diff(vllm_prompt_logprobs(llm, p["prompt"], p["kept"]), want)
    print(f"\ntied embeddings: the change moved the logprobs by {change:.2e}; vLLM vs trainer after "
          f"reload_weights alone {stale:.2e}, after the adapter's sync {diff:.2e}")
    assert change > 100 * LOGPROB_TOL
    assert diff <= LOGPROB_TOL
