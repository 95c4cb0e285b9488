"""The reflection model as a separate vLLM server during training, killed mid-run and brought back.

The paper's set-up serves the reflection model on a GPU of its own (it never syncs weights, so a
plain `vllm serve` works). Here a real vLLM CPU server (.venv-vllm) serves a tiny reflection model
built from a config (untrained: whatever P(Result) it gives is a valid score), and `REARLTrainer`
trains a tiny policy with `reflection_model` set to the server's URL. Two kinds of outage follow:
after step FREEZE_AFTER the server's process group is stopped (SIGSTOP: it accepts connections and
never answers, so every request runs into `reflection_timeout`), after step KILL_AFTER it gets
SIGKILL (a crash: connections are refused). Those steps' revisions must fail and be counted
(`revision/failures` = the samples whose scoring failed), their loss must stay finite and they must
end within the scorer's bounded timeouts and retries (set small here). After step RESTART_AFTER the
server is started again on the same port (the trainer keeps its URL), and the next steps revise again.

The policy's sampling is scripted (as in tests/test_trainer.py) so that every sample has
paragraphs and the revisions' answers are known: the reflection scoring, the cut, the revision
rows, the rewards and the optimizer steps are the real ones. Without the vLLM venv the test is
skipped, saying so. Cores: $REARL_VLLM_CPUS, else every core this process may use. Measured in
docs/training.md#a-served-reflection-model.
"""

import math
import os
import signal
import time

import pytest

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from rearl.backends.vllm_server import VENV_ENV, VLLMServer, default_venv, venv_python  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    venv_python() is None, reason=f"no vLLM venv at {default_venv()} (run `make vllm`, or point ${VENV_ENV} at one)")]

STEPS = 6
FREEZE_AFTER = 2  # the server hangs from the end of this step: step 3 times out
KILL_AFTER = 3  # the hung server is killed at the end of this step: step 4 is refused
RESTART_AFTER = 4  # back at the end of this step (the callback waits for it): steps 5 and 6 revise again
TIMEOUT, RETRIES = 15, 1  # reflection_timeout / reflection_retries
G = 2  # samples per step (num_generations 4 = 2 samples + 2 revisions)

from _scripted import LONG, WRONG  # noqa: E402


@pytest.fixture(scope="module")
def reflector_dir(tmp_path_factory, r1_tok):
    """A tiny random Qwen2 reflection model with the R1 tokenizer; head size 64 (vLLM's CPU attention)."""
    from _tiny import tiny_qwen2_dir

    return tiny_qwen2_dir(tmp_path_factory.mktemp("tiny-reflector"), r1_tok, seed=1, hidden_size=64,
                          intermediate_size=128, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                          max_position_embeddings=4096)


def _kill_hard(srv: VLLMServer) -> None:
    """SIGKILL to the server's whole process group (API server and engine core), as a crash would; then reap."""
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.stop(grace=10)


@pytest.mark.timeout(600)  # start-ups are bounded below too; this is the backstop for CI
def test_training_survives_reflection_server_outage(reflector_dir, tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rearl.core.groups import Sample
    from rearl.core.prompts import math_messages
    from rearl.train.config import load_config
    from rearl.train.trainer import REARLTrainer

    class Scripted(REARLTrainer):
        def _sample(self, prompt_ids, n, max_new_tokens):
            tok = self.processing_class
            texts = [LONG, WRONG] if max_new_tokens == self.max_completion_length else ["\\boxed{42}", "\\boxed{41}"]
            assert len(texts) == len(prompt_ids) * n
            return [Sample(tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id], True) for t in texts]

    class Recording:
        """The trainer's scorer, keeping each call's errors (one call per step)."""

        def __init__(self, inner):
            self.inner, self.errors = inner, []

        def score(self, problems, paragraphs, mode="forward"):
            out = self.inner.score(problems, paragraphs, mode)
            self.errors.append([o.error for o in out])
            return out

    srv = VLLMServer(reflector_dir, max_model_len=2048, kv_cache_gb=1, startup_timeout=240,
                     log_path=tmp_path / "vllm.log")
    events: dict[str, float] = {}

    class Outage(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            events[f"begin{state.global_step + 1}"] = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            events[f"end{state.global_step}"] = time.monotonic()
            if state.global_step == FREEZE_AFTER:
                os.killpg(srv.proc.pid, signal.SIGSTOP)
            elif state.global_step == KILL_AFTER:
                _kill_hard(srv)
                assert not srv.healthy(timeout=1)
            elif state.global_step == RESTART_AFTER:
                t0 = time.monotonic()
                srv.start()  # the same port, so the trainer's URL is unchanged
                events["restart_s"] = time.monotonic() - t0

    try:
        srv.start()
        first_start = srv.startup_seconds
        _, _, cfg = load_config(None, [
            f"output_dir={tmp_path / 'run'}", "use_cpu=true", "bf16=false", "per_device_train_batch_size=4",
            "num_generations=4", "max_completion_length=64", "revision_max_tokens=16", "report_to=none",
            "save_strategy=no", "logging_steps=1", f"max_steps={STEPS}", "gradient_checkpointing=false",
            f"reflection_model={srv.url}", f"reflection_tokenizer={reflector_dir}", f"reflection_timeout={TIMEOUT}",
            f"reflection_retries={RETRIES}", "reflection_threshold=20"])
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        ds = Dataset.from_list([{"prompt": math_messages("What is 6 times 7?"), "problem": "What is 6 times 7?",
                                 "answer": "42"}] * 4)
        tr = Scripted(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Outage()])
        assert tr.reflection_scorer.base_url == srv.url
        assert (tr.reflection_scorer.timeout, tr.reflection_scorer.retries) == (TIMEOUT, RETRIES)
        # one request at a time: a hung server must then cost one trace's timeouts, not one per trace
        tr.reflection_scorer.concurrency = 1
        tr.reflection_scorer = Recording(tr.reflection_scorer)
        t0 = time.monotonic()
        tr.train()
        train_s = time.monotonic() - t0
    finally:
        if srv.proc is not None:
            try:
                os.killpg(srv.proc.pid, signal.SIGCONT)  # a stopped server would ignore SIGTERM
            except ProcessLookupError:
                pass
        srv.stop()
    assert srv.proc is None

    logs = {h["step"]: h for h in tr.state.log_history if "revision/failures" in h}
    assert sorted(logs) == list(range(1, STEPS + 1))
    step_s = {k: events[f"end{k}"] - events[f"begin{k}"] for k in range(1, STEPS + 1)}
    for k, h in sorted(logs.items()):
        print(f"step {k}: failures {h['revision/failures']:.0f}, accept_rate {h['revision/accept_rate']:.2f}, "
              f"loss {h['loss']:.4f}, reflection {h['timing/reflection_s']:.2f} s, step {step_s[k]:.1f} s")
    print(f"vLLM start-up {first_start:.0f} s, restart {events['restart_s']:.0f} s; training {train_s:.0f} s "
          f"(restart included)")
    down = range(FREEZE_AFTER + 1, RESTART_AFTER + 1)
    bound = (RETRIES + 1) * TIMEOUT + 0.5 * (2 ** RETRIES - 1)  # one trace's first request, every try timing out
    for k, h in logs.items():
        assert math.isfinite(h["loss"]), (k, h)
        if k in down:  # every sample's scoring failed, counted; no revision row survives
            assert h["revision/failures"] == G, (k, h)
            assert h["revision/accept_rate"] == 0.0, (k, h)
            assert h["groups/dropped_rows"] == 0.5, (k, h)
            assert step_s[k] < bound + 30, f"step {k} took {step_s[k]:.0f} s with the server down"
        else:  # before the kill and after the restart: scored and revised
            assert h["revision/failures"] == 0, (k, h)
            assert h["revision/accept_rate"] > 0, (k, h)
    errors = tr.reflection_scorer.errors
    assert len(errors) == STEPS
    for k in range(1, STEPS + 1):
        print(f"step {k}: errors {errors[k - 1]}")
    hung, dead = (logs[k]["timing/reflection_s"] for k in (FREEZE_AFTER + 1, KILL_AFTER + 1))
    # hung: the first trace ran into every timeout, the second was not sent
    assert TIMEOUT * (RETRIES + 1) <= hung < bound + 15
    first, second = errors[FREEZE_AFTER]
    assert first.startswith("ServerUnreachable") and "timed out" in first and second.startswith("not sent")
    # dead: refused at once, only the back-off
    assert dead < 5
    first, second = errors[KILL_AFTER]
    assert first.startswith("ServerUnreachable") and "refused" in first.lower() and second.startswith("not sent")
    assert tr.state.global_step == STEPS
