"""One rank of tests/test_multiprocess.py: `rearl train` (rearl.train.run.train) with revision on a tiny
model, launched by `accelerate launch` with several processes. It records what each rank saw, row by
row, into `<out>/rank<r>.json` for the test to check.

Instrumentation only, nothing here changes what the trainer computes, except two scripted parts:

* the reflection model: rank 0 never fails; rank 1 fails for every sample of its first rollout and
  for the first half of its samples afterwards, so the ranks send uneven numbers of revision inputs;
* the revised answer: the policy really generates it (the real call, with its cross-rank padding),
  then its text is replaced by `\\boxed{42}` or `\\boxed{41}` chosen by a hash of the input the answer
  was generated for; a random tiny model never answers correctly, and this makes correctness depend
  on which input an answer belongs to (the test recomputes the hash from the row);
* `_collective_generation` is on in the spec's `collective_steps` (what vLLM with several processes
  does), so the padding of revision inputs to the busiest rank runs with real ranks on CPU.
"""

from __future__ import annotations

import json
import os
import sys
import zlib

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def answer_for(input_ids: list[int]) -> str:
    """The scripted answer for one revision input (prompt + kept prefix + scaffold)."""
    return "\\boxed{42}" if zlib.crc32(json.dumps(list(input_ids)).encode()) % 3 else "\\boxed{41}"


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    rank = int(os.environ.get("RANK", "0"))

    import torch
    from trl import GRPOTrainer

    from rearl.core.groups import Sample
    from rearl.reflector.prompt import ScoreOutcome
    from rearl.train import trainer as T
    from rearl.train.config import load_config
    from rearl.train.run import train

    steps: list[dict] = []
    seen: dict = {"trainer": None, "calls": 0}

    class RankScorer:
        """Fails on purpose for rank 1's samples only (all of them on its first call)."""

        def score(self, problems, paragraphs, mode):
            seen["calls"] += 1
            n = len(paragraphs)
            if rank == 0:
                fail = [False] * n
            elif seen["calls"] == 1:
                fail = [True] * n
            else:
                fail = [i < n // 2 for i in range(n)]
            steps_rec = seen.setdefault("scorer_failures", [])
            steps_rec.append(sum(fail))
            return [ScoreOutcome(None, len(ps), error="down on purpose (rank 1)") if f
                    else ScoreOutcome([0.0] * len(ps), len(ps)) for ps, f in zip(paragraphs, fail)]

    orig_revisions = T.REARLTrainer._generate_revisions

    def generate_revisions(self, inputs, filler, max_new_tokens):
        real = orig_revisions(self, inputs, filler, max_new_tokens)  # the real call, padding included
        assert len(real) == len(inputs)
        tok = self.processing_class
        return [Sample(tok(answer_for(x), add_special_tokens=False)["input_ids"] + [tok.eos_token_id], True)
                for x in inputs]

    # Collective generation (vLLM's contract: every rank calls it with as many inputs as the others) in the
    # steps listed in the spec, in-process generation (each rank alone) in the others. The wrapper makes the
    # revision call a real collective: a rank that skipped it would leave the other waiting (the test's timeout).
    collective_steps = set(spec.get("collective_steps", []))
    T.REARLTrainer._collective_generation = lambda self: len(steps) in collective_steps
    orig_sample = T.REARLTrainer._sample

    def sample(self, prompt_ids, n, max_new_tokens):
        if max_new_tokens == self.rea_args.revision_max_tokens:
            rec = {"sent": len(prompt_ids)}
            if self._collective_generation():
                from accelerate.utils import gather_object

                rec["all_sent"] = gather_object([len(prompt_ids)])
            seen["revision_call"] = rec
        return orig_sample(self, prompt_ids, n, max_new_tokens)

    T.REARLTrainer._sample = sample
    orig_rollout = T.REARLTrainer._rea_rollout

    def rollout(self, prompts):
        seen["trainer"] = self
        out = orig_rollout(self, prompts)
        seen["rollout"] = {k: out[k] for k in ("prompt_ids", "completion_ids", "is_revision", "pair_id",
                                               "revision_failed", "revision_replaced")}
        return out

    orig_raw = GRPOTrainer._calculate_rewards

    def raw_rewards(self, inputs, prompts, completions, completion_ids_list):
        r = orig_raw(self, inputs, prompts, completions, completion_ids_list)
        seen["raw"] = r.tolist()
        return r

    orig_rewards = T.REARLTrainer._calculate_rewards

    def rewards(self, inputs, prompts, completions, completion_ids_list):
        r = orig_rewards(self, inputs, prompts, completions, completion_ids_list)
        seen["final"] = r.tolist()
        return r

    orig_gen = T.REARLTrainer._generate_and_score_completions

    def generate_and_score(self, inputs):
        out = orig_gen(self, inputs)
        steps.append({
            "rank": self.accelerator.process_index, "world": self.accelerator.num_processes,
            "problems": [x["problem"] for x in inputs],
            **seen.pop("rollout"),
            "raw_rewards": seen.pop("raw"), "rewards": seen.pop("final"),
            "advantages": out["advantages"].tolist(),
            "reward_names": list(self.reward_func_names), "reward_weights": self.reward_weights.tolist(),
            "group_size": self.num_generations,
            "scorer_failures": seen["scorer_failures"][-1],
            "collective": len(steps) in collective_steps, "revision_call": seen.pop("revision_call", None),
        })
        return out

    T.REARLTrainer._generate_revisions = generate_revisions
    T.REARLTrainer._rea_rollout = rollout
    GRPOTrainer._calculate_rewards = raw_rewards
    T.REARLTrainer._calculate_rewards = rewards
    T.REARLTrainer._generate_and_score_completions = generate_and_score

    torch.manual_seed(1234 + rank)
    error = None
    try:
        m, d, c = load_config(None, spec["overrides"])  # may refuse the config (whole groups per rank)
        train(m, d, c, reflection_scorer=RankScorer())
    except Exception as e:  # noqa: BLE001 - recorded for the test, then re-raised
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        tr = seen["trainer"]
        with open(os.path.join(spec["out"], f"rank{rank}.json"), "w") as f:
            json.dump({"rank": rank, "steps": steps, "error": error,
                       "log_history": tr.state.log_history if tr is not None else None,
                       "global_step": tr.state.global_step if tr is not None else None}, f)


if __name__ == "__main__":
    main(sys.argv[1])
