"""REA-RL on TRL: `REARLTrainer`, the smallest subclass of `GRPOTrainer` the method needs.

* Rollout (TRL's `rollout_func` hook): G samples per prompt from the policy, reflection-model
  scoring of each, token-exact revision, and groups of 2G rows (`rearl.core.groups.interleave`).
  Extra per-row fields (`is_revision`, `pair_id`, `cut_paragraph`, `tokens_saved`, ...) reach the
  reward functions and the logs; `env_mask` masks the scaffold when `mask_scaffold_tokens`.
* `_calculate_rewards` (no hook exists): dropped revisions and all-wrong groups become NaN rows,
  which TRL's nan-aware group statistics exclude and give zero advantage.

Generation: in-process with the trainer's model (CPU, tests, testbed) or, with `use_vllm`, through
TRL's vLLM engine (server or colocate) — the latter is thin and cannot be exercised without a GPU.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Sequence

import torch
from trl import GRPOTrainer

from rearl.backends.hf import cut_at_eos, left_pad
from rearl.core.groups import RevisionOutcome, Sample, apply_group_policies, interleave
from rearl.core.reflection import count_reflections
from rearl.core.revision import scaffold_ids
from rearl.core.rewards import (
    AccuracyReward,
    KimiLengthReward,
    RefinedLengthReward,
    ReflectionReward,
)
from rearl.core.text import Segmentation, ThinkTags, segment
from rearl.core.verify import check_completions
from rearl.train.config import REARLConfig


def build_reward_funcs(cfg: REARLConfig, tokenizer: Any) -> list:
    """The reward functions a config asks for (accuracy always first)."""
    tags = ThinkTags.from_tokenizer(tokenizer)
    acc = AccuracyReward(mode=cfg.accuracy_mode, tags=tags, require_close=cfg.require_think_close)
    funcs: list = [acc]
    if cfg.length_reward == "refined":
        funcs.append(RefinedLengthReward(unit=cfg.length_unit, units=cfg.length_units, accuracy=acc))
    elif cfg.length_reward == "kimi":
        funcs.append(KimiLengthReward(unit=cfg.length_unit, scope=cfg.length_scope, accuracy=acc))
    if cfg.reflection_reward:
        funcs.append(ReflectionReward(tokenizer, threshold=cfg.reflection_threshold, calibration=cfg.reflection_calibration,
                                      regex=cfg.reflection_regex, form=cfg.reflection_reward_form, tags=tags))
    return funcs


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


class REARLTrainer(GRPOTrainer):
    """GRPO with REA-RL's sequential revision and group policies. See `REARLConfig`."""

    def __init__(self, model: Any, args: REARLConfig, train_dataset: Any, processing_class: Any = None,
                 reward_funcs: Sequence[Any] | None = None, reflection_scorer: Any = None, **kwargs: Any):
        if not isinstance(args, REARLConfig):
            raise TypeError("REARLTrainer needs a REARLConfig")
        if reward_funcs is None:
            if processing_class is None:
                raise ValueError("pass processing_class (the tokenizer) or reward_funcs")
            reward_funcs = build_reward_funcs(args, processing_class)
        self.rea_args = args
        self._gold: dict[str, tuple[str, str | None]] = {}
        if args.revision:
            for row in train_dataset:
                self._gold.setdefault(_prompt_key(row["prompt"]), (str(row.get("problem", "")), row.get("answer")))
            kwargs["rollout_func"] = lambda prompts, trainer: trainer._rea_rollout(prompts)
        super().__init__(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        self.reflection_scorer = reflection_scorer
        if args.revision and args.reflection_model != "oracle" and reflection_scorer is None:
            from rearl.backends import reflection_scorer as make_scorer

            device = "cpu" if self.accelerator.device.type == "cpu" else str(self.accelerator.device)
            self.reflection_scorer = make_scorer(args.reflection_model, tokenizer=args.reflection_tokenizer, device=device)
            from rearl.reflector.window import windowed

            # a window-trained reflection model scores as it was trained (paragraphs within its token budget)
            self.reflection_scorer = windowed(self.reflection_scorer, args.reflection_model,
                                              args.reflection_window_tokens, processing_class)
        self._tags = ThinkTags.from_tokenizer(self.processing_class)

    # -- generation ---------------------------------------------------------------------------
    def _eos_ids(self) -> list[int]:
        ids = getattr(self, "eos_token_ids", None)
        if ids:
            return list(ids)
        return [self.processing_class.eos_token_id]

    def _sample(self, prompt_ids: list[list[int]], n: int, max_new_tokens: int) -> list[Sample]:
        """n samples per prompt (consecutive), with the config's sampling settings."""
        if self.use_vllm:
            return self._sample_vllm(prompt_ids, n, max_new_tokens)
        return self._sample_hf(prompt_ids, n, max_new_tokens)

    def _sample_hf(self, prompt_ids: list[list[int]], n: int, max_new_tokens: int) -> list[Sample]:
        tok = self.processing_class
        model = self.accelerator.unwrap_model(self.model)
        pad = tok.pad_token_id if tok.pad_token_id is not None else self._eos_ids()[0]
        ids, mask = left_pad([p for p in prompt_ids for _ in range(n)], pad)
        width = ids.shape[1]
        a = self.rea_args
        sample = a.temperature > 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids.to(self.accelerator.device), attention_mask=mask.to(self.accelerator.device),
                    max_new_tokens=max_new_tokens, do_sample=sample, temperature=a.temperature if sample else None,
                    top_p=a.top_p if sample else None, top_k=a.top_k if sample else None,  # 0 = off, as in TRL
                    min_p=a.min_p if sample and a.min_p else None, repetition_penalty=a.repetition_penalty,
                    pad_token_id=pad, eos_token_id=self._eos_ids(), use_cache=True,
                )
        finally:
            model.train(was_training)
        eos = set(self._eos_ids())
        return [Sample(*cut_at_eos(row, eos)) for row in out[:, width:].tolist()]

    def _sample_vllm(self, prompt_ids: list[list[int]], n: int, max_new_tokens: int) -> list[Sample]:
        # TRL syncs the weights before calling the rollout; only the token budget differs per call.
        vg = self.vllm_generation
        old = vg.max_completion_length
        vg.max_completion_length = max_new_tokens
        try:
            rows = [p for p in prompt_ids for _ in range(n)]
            _, completion_ids, logprobs, _ = vg.generate(prompts=rows, images=None, num_generations=n)
        finally:
            vg.max_completion_length = old
        eos = set(self._eos_ids())
        return [Sample(list(c), bool(c) and c[-1] in eos, [lp[0] for lp in l] if l is not None else None)
                for c, l in zip(completion_ids, logprobs)]

    # -- the rollout ----------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Any) -> list[int]:
        tok = self.processing_class
        if isinstance(prompt, str):
            text = prompt
        else:
            text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                           **(self.rea_args.chat_template_kwargs or {}))
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def _score(self, problems: list[str], golds: list[str | None], segs: list[Segmentation]) -> list[tuple[list[float] | None, str | None]]:
        """P(Result) per paragraph for every sample, or an error."""
        a = self.rea_args
        if a.reflection_model == "oracle":
            from rearl.core.detectors import answer_mentions, correct_mentions

            out = []
            for seg, gold in zip(segs, golds):
                if gold is None:
                    out.append((None, "oracle needs a gold answer"))
                    continue
                ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), str(gold))
                hit = {p.index for p in seg.paragraphs for m in ok if p.char_start <= m.pos < p.char_end}
                out.append(([1.0 if i in hit else 0.0 for i in range(len(seg.paragraphs))], None))
            return out
        try:
            res = self.reflection_scorer.score(problems, [[p.text for p in s.paragraphs] for s in segs], a.reflection_mode)
        except Exception as e:  # noqa: BLE001 - a scorer crash fails these samples' revisions, not the step
            return [(None, f"{type(e).__name__}: {e}")] * len(segs)
        return [(r.p_result, r.error) for r in res]

    def _rea_rollout(self, prompts: list[Any]) -> dict[str, Any]:
        from rearl.core.positions import cut_positions

        a = self.rea_args
        tok = self.processing_class
        g2 = self.num_generations if self.model.training else self.num_generations_eval
        G = g2 // 2
        uniq = prompts[::g2]
        t0 = time.perf_counter()
        p_ids = [self._prompt_ids(p) for p in uniq]
        originals = self._sample(p_ids, G, self.max_completion_length)
        t_gen = time.perf_counter() - t0

        meta = [self._gold.get(_prompt_key(p), (None, None)) for p in uniq]
        problems = [meta[u][0] or "" for u in range(len(uniq)) for _ in range(G)]
        golds = [meta[u][1] for u in range(len(uniq)) for _ in range(G)]
        segs = [segment(tok, ids=s.ids, tags=self._tags) for s in originals]
        t1 = time.perf_counter()
        scores = self._score(problems, golds, segs)
        t_score = time.perf_counter() - t1

        # revisions for every sample that has paragraphs and a score
        outcomes: list[RevisionOutcome] = []
        todo: list[int] = []
        inputs: list[list[int]] = []
        prefixes: dict[int, tuple[list[int], list[int]]] = {}
        for i, (seg, (p, err)) in enumerate(zip(segs, scores)):
            if err is not None or p is None or not seg.paragraphs:
                outcomes.append(RevisionOutcome(None, error=err or "no thinking paragraphs"))
                continue
            pos = cut_positions(p, len(seg.paragraphs))
            cut = pos.get(a.reflection_position)
            prefix = seg.prefix_ids(cut)
            scaf = scaffold_ids(tok, tok.decode(prefix[-4:], skip_special_tokens=False) if prefix else "", a.revision_scaffold)
            outcomes.append(RevisionOutcome(None, cut_paragraph=cut))
            prefixes[i] = (prefix, scaf)
            todo.append(i)
            inputs.append(p_ids[i // G] + prefix + scaf)
        t2 = time.perf_counter()
        answers = self._sample(inputs, 1, a.revision_max_tokens) if inputs else []
        t_rev = time.perf_counter() - t2
        texts, gold_list = [], []
        for i, ans in zip(todo, answers):
            prefix, scaf = prefixes[i]
            o = outcomes[i]
            o.ids = prefix + scaf + ans.ids
            o.sampled_mask = [1] * len(prefix) + [0] * len(scaf) + [1] * len(ans.ids)
            if originals[i].logprobs is not None and ans.logprobs is not None:
                o.logprobs = list(originals[i].logprobs[: len(prefix)]) + [math.nan] * len(scaf) + list(ans.logprobs)
            o.ok = ans.finished  # correctness is checked next
            texts.append(tok.decode(o.ids, skip_special_tokens=True))
            gold_list.append(golds[i])
        checks = check_completions(texts, [g if g is not None else "" for g in gold_list], mode=a.accuracy_mode,
                                   tags=self._tags, require_close=a.require_think_close) if texts else []
        n_correct = 0
        for i, c, g in zip(todo, checks, gold_list):
            correct = c.ok and g is not None
            n_correct += correct
            outcomes[i].ok = outcomes[i].ok and correct

        rows_all = None
        for u in range(len(uniq)):
            r = interleave(originals[u * G:(u + 1) * G], outcomes[u * G:(u + 1) * G], a.failed_revision_policy,
                           pair_offset=u * G)
            if rows_all is None:
                rows_all = r
            else:
                for k, v in vars(r).items():
                    cur = getattr(rows_all, k)
                    if cur is None or v is None:
                        setattr(rows_all, k, None)
                    else:
                        cur.extend(v)
        assert rows_all is not None

        # metrics of this rollout (local process)
        mode = "train" if self.model.training else "eval"
        m = self._metrics[mode]
        n = len(originals)
        accepted = [o for o in outcomes if o.ok]
        think = [s.think_tokens for s in segs]
        dens = [count_reflections(s.split.think, self.rea_args.reflection_regex) / t for s, t in zip(segs, think) if t > 0]
        m["revision/failures"].append(float(sum(o.error is not None for o in outcomes)))
        m["revision/accept_rate"].append(len(accepted) / n)
        m["revision/accuracy"].append(n_correct / max(1, len(todo)))
        m["revision/answer_finished"].append(sum(a_.finished for a_ in answers) / max(1, len(answers)))
        saved = [t for t, rev in zip(rows_all.tokens_saved, rows_all.is_revision) if rev]
        m["revision/tokens_saved"].append(sum(saved) / max(1, len(accepted)))
        m["reflection/density"].append(sum(dens) / len(dens) if dens else 0.0)
        m["completions/think_tokens"].append(sum(think) / n)
        m["timing/generate_s"].append(t_gen)
        m["timing/reflection_s"].append(t_score)
        m["timing/revision_s"].append(t_rev)

        out: dict[str, Any] = {
            "prompt_ids": [p_ids[r // g2] for r in range(len(prompts))],
            "completion_ids": rows_all.completion_ids,
            "logprobs": rows_all.logprobs,
            "is_revision": rows_all.is_revision,
            "pair_id": rows_all.pair_id,
            "revision_failed": rows_all.revision_failed,
            "revision_replaced": rows_all.revision_replaced,
            "cut_paragraph": rows_all.cut_paragraph,
            "tokens_saved": rows_all.tokens_saved,
        }
        if a.mask_scaffold_tokens:
            out["env_mask"] = rows_all.env_mask
        return out

    # -- group policies -------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        a = self.rea_args
        mode = "train" if self.model.training else "eval"
        # TRL logs reward means after our NaN rows are applied; keep the raw means visible too.
        for k, name in enumerate(self.reward_func_names):
            col = rewards[:, k]
            if (~torch.isnan(col)).any():
                self._metrics[mode][f"rewards_raw/{name}/mean"].append(torch.nanmean(col).item())
        zero = a.zero_accuracy_groups
        if zero == "auto":  # docs/method.md#rewards: the authors mask all-wrong groups only when truncation is on
            zero = "zero_advantage" if a.revision else "keep"
        if not a.revision and zero == "keep":
            return rewards
        from accelerate.utils import gather_object

        dropped = gather_object([bool(x.get("revision_failed", False)) for x in inputs])
        names = list(self.reward_func_names)
        acc_col = names.index("accuracy") if "accuracy" in names else None
        g = self.num_generations if mode == "train" else self.num_generations_eval
        new = apply_group_policies(rewards.tolist(), g, acc_col, dropped, zero)
        out = torch.tensor(new, dtype=rewards.dtype, device=rewards.device)
        rows = out.shape[0]
        if rows:
            self._metrics[mode]["groups/dropped_rows"].append(float(sum(dropped)) / rows)
            self._metrics[mode]["groups/zero_advantage_rows"].append(
                float(torch.isnan(out).all(dim=1).sum().item() - sum(dropped)) / rows)
        return out
