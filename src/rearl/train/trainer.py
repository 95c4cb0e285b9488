"""REA-RL on TRL: `REARLTrainer`, the smallest subclass of `GRPOTrainer` the method needs.

* Rollout (TRL's `rollout_func` hook): G samples per prompt from the policy, reflection-model
  scoring of each, token-exact revision, and groups of 2G rows (`rearl.core.groups.interleave`).
  Extra per-row fields (`is_revision`, `pair_id`, `cut_paragraph`, `tokens_saved`, ...) reach the
  reward functions and the logs; `env_mask` masks the scaffold when `mask_scaffold_tokens`.
* `_calculate_rewards` (no hook exists): dropped revisions and all-wrong groups become NaN rows,
  which TRL's nan-aware group statistics exclude and give zero advantage.

Generation: in-process with the trainer's model (CPU, tests, testbed) or, with `use_vllm`, through
TRL's vLLM engine (server or colocate). Colocate mode also runs on CPU with vLLM's CPU build in the
trainer's venv (`make vllm-colocate`): there `rearl.train.vllm_sync` builds the engine in the policy's
dtype and replaces TRL's weight sync, which fails on CPU (tests/test_vllm_colocate.py).

Several processes (docs/training.md#several-processes): each rank rolls out its own whole groups;
rewards, dropped-row flags and group policies work on the rows gathered in rank order; the rollout
metrics are summed over ranks (TRL logs rank 0's only). tests/test_multiprocess.py runs 2 CPU ranks.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Sequence

import torch
from trl import GRPOTrainer

from rearl.backends.hf import cut_at_eos, left_pad
from rearl.core.detectors import oracle_p_result
from rearl.core.groups import RevisionOutcome, Sample, apply_group_policies, interleave
from rearl.core.prompts import opens_thinking
from rearl.core.reflection import count_reflections
from rearl.core.revision import kept_prefix_ids, revise
from rearl.core.rewards import (
    FINISHED_KEY,
    AccuracyReward,
    AdaptiveLengthReward,
    KimiLengthReward,
    RefinedLengthReward,
    ReflectionReward,
    gold_column,
    read_gold,
)
from rearl.core.text import Segmentation, ThinkTags, segment
from rearl.core.verify import check_completions
from rearl.train.config import REARLConfig


def require_close(cfg: REARLConfig, tokenizer: Any) -> bool:
    """`require_think_close`, with None resolved from the chat template: when the template opens
    `<think>` in the prompt, a completion cut off mid-thinking carries no tag at all and must not be
    read as plain text (its boxed guesses would score)."""
    return opens_thinking(tokenizer) if cfg.require_think_close is None else bool(cfg.require_think_close)


def _eos_token_ids(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def build_reward_funcs(cfg: REARLConfig, tokenizer: Any) -> list:
    """The reward functions a config asks for (accuracy always first)."""
    tags = ThinkTags.from_tokenizer(tokenizer)
    acc = AccuracyReward(mode=cfg.accuracy_mode, tags=tags, require_close=require_close(cfg, tokenizer),
                         require_eos=cfg.require_eos, eos_token_ids=_eos_token_ids(tokenizer))
    funcs: list = [acc]
    if cfg.length_reward == "refined":
        funcs.append(RefinedLengthReward(unit=cfg.length_unit, units=cfg.length_units, accuracy=acc))
    elif cfg.length_reward == "kimi":
        funcs.append(KimiLengthReward(unit=cfg.length_unit, scope=cfg.length_scope, accuracy=acc))
    elif cfg.length_reward == "alp":
        funcs.append(AdaptiveLengthReward(norm=cfg.max_completion_length, beta=cfg.alp_beta, unit=cfg.length_unit,
                                          accuracy=acc))
    if cfg.reflection_reward:
        funcs.append(ReflectionReward(tokenizer, threshold=cfg.reflection_threshold, calibration=cfg.reflection_calibration,
                                      regex=cfg.reflection_regex, form=cfg.reflection_reward_form, tags=tags))
    return funcs


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _colocate_engine_kwargs(args: REARLConfig, model: Any) -> dict[str, Any]:
    """Extra `vllm.LLM` arguments for TRL's colocate engine: the config's `vllm_engine_kwargs`, and on CPU
    the policy's dtype (vLLM's "auto" would run a float32 policy in bfloat16 there)."""
    if not args.use_vllm or args.vllm_mode != "colocate":
        return {}
    extra = dict(args.vllm_engine_kwargs or {})
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    if on_cpu:
        from rearl.train.vllm_sync import cpu_env_defaults

        cpu_env_defaults()  # KV cache size and cores, unless set
        if isinstance(model, torch.nn.Module):
            extra.setdefault("dtype", str(next(model.parameters()).dtype).removeprefix("torch."))
    return extra


class _RolloutPolicy:
    """The trainer's own sampler behind `rearl.core.revision`'s Policy interface."""

    def __init__(self, trainer: "REARLTrainer", filler: list[int]):
        self.trainer, self.filler = trainer, filler
        self.collective = trainer._collective_generation()

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 256, **_: Any) -> list[Sample]:
        # sampling settings are the rollout's (the config's temperature, top_p, top_k)
        return self.trainer._generate_revisions([list(p) for p in prompts], self.filler, max_new_tokens)


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
        gold_column(list(train_dataset.column_names))  # a clear error now, not every revision failing later
        if args.revision:
            for row in train_dataset:
                self._gold.setdefault(_prompt_key(row["prompt"]), (str(row.get("problem", "")), read_gold(row)))
            kwargs["rollout_func"] = lambda prompts, trainer: trainer._rea_rollout(prompts)
        from rearl.train import vllm_sync

        with vllm_sync.engine_kwargs(_colocate_engine_kwargs(args, model)):
            super().__init__(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=train_dataset,
                             processing_class=processing_class, **kwargs)
        self.vllm_weight_sync = vllm_sync.install(self)  # colocate on CPU: TRL's sync replaced; else None
        self.reflection_scorer = reflection_scorer
        if reflection_scorer is None:
            import logging

            from rearl.train.config import check_reflection_model

            for w in check_reflection_model(args, self.accelerator.device.type, self.accelerator.num_processes):
                if self.accelerator.is_main_process:
                    logging.getLogger("rearl").warning(w)
        if args.revision and args.reflection_model != "oracle" and reflection_scorer is None:
            from rearl.backends import reflection_scorer as make_scorer

            device = "cpu" if self.accelerator.device.type == "cpu" else str(self.accelerator.device)
            self.reflection_scorer = make_scorer(args.reflection_model, tokenizer=args.reflection_tokenizer, device=device,
                                                 timeout=args.reflection_timeout, retries=args.reflection_retries)
            from rearl.reflector.window import windowed

            # a window-trained reflection model scores as it was trained (paragraphs within its token budget)
            import logging

            self.reflection_scorer = windowed(self.reflection_scorer, args.reflection_model,
                                              args.reflection_window_tokens, processing_class,
                                              tokenizer=args.reflection_tokenizer,
                                              partial_labels=args.reflection_partial_labels,
                                              warn=logging.getLogger("rearl").warning)
        self._tags = ThinkTags.from_tokenizer(self.processing_class)
        self._require_close = require_close(args, self.processing_class)
        for f in self.reward_funcs:  # the model may stop on more EOS ids than the tokenizer names
            if isinstance(f, AccuracyReward) and f.require_eos:
                f.eos_token_ids |= set(self._eos_ids())

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

    def _lean_decoder(self, model: Any) -> Any:
        """The lean decoder for `model` when `rollout_backend` asks for it (None: transformers' generate)."""
        a = self.rea_args
        if a.rollout_backend == "hf":
            return None
        from rearl.backends.lean import LeanDecoder, supports

        why = supports(model)
        if why is None and a.repetition_penalty != 1.0:
            why = "repetition_penalty is not 1"
        if a.rollout_backend == "auto" and (why or self.accelerator.device.type != "cpu"):
            return None
        if why:
            raise ValueError(f"rollout_backend 'lean' cannot sample this policy: {why}; use rollout_backend: hf")
        cached = getattr(self, "_lean", None)
        if cached is None or cached.model is not model:
            self._lean = cached = LeanDecoder(model)
        return cached

    def _sample_hf(self, prompt_ids: list[list[int]], n: int, max_new_tokens: int) -> list[Sample]:
        tok = self.processing_class
        model = self.accelerator.unwrap_model(self.model)
        lean = self._lean_decoder(model)
        a = self.rea_args
        if lean is not None:
            sample = a.temperature > 0
            was_training = model.training
            model.eval()
            try:
                out = lean.generate([p for p in prompt_ids for _ in range(n)], max_new_tokens, self._eos_ids(),
                                    temperature=a.temperature if sample else 0.0, top_k=a.top_k or 0,
                                    top_p=a.top_p, min_p=a.min_p or 0.0)
            finally:
                model.train(was_training)
            return [Sample(ids, finished) for ids, finished in out]
        pad = tok.pad_token_id if tok.pad_token_id is not None else self._eos_ids()[0]
        ids, mask = left_pad([p for p in prompt_ids for _ in range(n)], pad)
        width = ids.shape[1]
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
            return [(oracle_p_result(seg, str(gold)), None) if gold is not None else (None, "oracle needs a gold answer")
                    for seg, gold in zip(segs, golds)]
        try:
            res = self.reflection_scorer.score(problems, [[p.text for p in s.paragraphs] for s in segs], a.reflection_mode)
        except Exception as e:  # noqa: BLE001 - a scorer crash fails these samples' revisions, not the step
            return [(None, f"{type(e).__name__}: {e}")] * len(segs)
        if len(res) != len(segs):
            return [(None, f"the reflection model returned {len(res)} outcomes for {len(segs)} samples")] * len(segs)
        out: list[tuple[list[float] | None, str | None]] = []
        for r in res:
            p, err = r.p_result, r.error
            want = r.n_shown or r.n_paragraphs  # paragraphs that fit its prompt
            if err is None and p is not None and len(p) < want and a.reflection_partial_labels == "fail":
                p, err = None, f"the reflection model labelled {len(p)} of the {want} paragraphs it was shown"
            out.append((p, err))
        return out

    def _collective_generation(self) -> bool:
        """Whether generating is a collective call across ranks (vLLM with several processes)."""
        return bool(self.use_vllm) and self.accelerator.num_processes > 1

    def _rank_counts(self, n: int) -> list[int]:
        """Every rank's number of revision inputs (a collective: all ranks call it every step)."""
        from accelerate.utils import gather_object

        return [int(x) for x in gather_object([n])]

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        """Each value summed over all ranks (a collective: every rank calls it at the same point)."""
        if self.accelerator.num_processes == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.gather(t).view(-1, len(values)).sum(dim=0).tolist()

    def _max_over_ranks(self, values: list[float]) -> list[float]:
        if self.accelerator.num_processes == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.gather(t).view(-1, len(values)).max(dim=0).values.tolist()

    def _generate_revisions(self, inputs: list[list[int]], filler: list[int], max_new_tokens: int) -> list[Sample]:
        """One answer per input. vLLM generation is a collective across ranks, so every rank sends the
        same number of inputs: a rank with fewer (failed revisions are skipped) pads with `filler`
        and drops those answers; a rank with none still takes part."""
        n = len(inputs)
        if self._collective_generation():
            most = max(self._rank_counts(n))
            if most == 0:
                return []
            padded = inputs + [filler] * (most - n)
            return self._sample(padded, 1, max_new_tokens)[:n]
        return self._sample(inputs, 1, max_new_tokens) if inputs else []

    def _rea_rollout(self, prompts: list[Any]) -> dict[str, Any]:
        from rearl.core.positions import cut_positions

        a = self.rea_args
        tok = self.processing_class
        g2 = self.num_generations if self.model.training else self.num_generations_eval
        G = g2 // 2
        if len(prompts) % g2 or any(_prompt_key(prompts[k]) != _prompt_key(prompts[k - k % g2]) for k in range(len(prompts))):
            raise RuntimeError(f"REA-RL needs whole groups on every rank: {len(prompts)} prompts here do not form "
                               f"consecutive groups of {g2} (check per_device_train_batch_size and num_generations)")
        uniq = prompts[::g2]
        t0 = time.perf_counter()
        p_ids = [self._prompt_ids(p) for p in uniq]
        originals = self._sample(p_ids, G, self.max_completion_length)
        t_gen = time.perf_counter() - t0

        meta = [self._gold.get(_prompt_key(p), (None, None)) for p in uniq]
        problems = [meta[u][0] or "" for u in range(len(uniq)) for _ in range(G)]
        golds = [meta[u][1] for u in range(len(uniq)) for _ in range(G)]
        # The EOS token is not text: without the strip, an unclosed thinking part would show the EOS
        # string to the reflection model as the end of its last paragraph (the prefix stays the sample's).
        eos = set(self._eos_ids())
        segs = [segment(tok, ids=s.ids[:-1] if s.ids and s.ids[-1] in eos else s.ids, tags=self._tags) for s in originals]
        t1 = time.perf_counter()
        scores = self._score(problems, golds, segs)
        t_score = time.perf_counter() - t1

        # revisions for every sample that has paragraphs and a score
        outcomes: list[RevisionOutcome] = []
        todo: list[int] = []
        prefixes: list[list[int]] = []
        n_skipped = 0
        for i, (seg, (p, err)) in enumerate(zip(segs, scores)):
            if err is not None or p is None or not seg.paragraphs:
                outcomes.append(RevisionOutcome(None, error=err or "no thinking paragraphs"))
                continue
            if a.revise_without_result == "skip" and not any(x >= 0.5 for x in p):
                outcomes.append(RevisionOutcome(None))  # no Result flagged: no revision (a dropped row)
                n_skipped += 1
                continue
            cut = cut_positions(p, len(seg.paragraphs)).get(a.reflection_position)
            outcomes.append(RevisionOutcome(None, cut_paragraph=cut))
            prefixes.append(kept_prefix_ids(seg, cut, a.short_trace_rule))
            todo.append(i)
        t2 = time.perf_counter()
        policy = _RolloutPolicy(self, filler=p_ids[0])
        revisions = revise(policy, tok, [p_ids[i // G] for i in todo], prefixes, scaffold=a.revision_scaffold,
                           max_new_tokens=a.revision_max_tokens) if todo or policy.collective else []
        t_rev = time.perf_counter() - t2
        for i, rev in zip(todo, revisions):
            o = outcomes[i]
            o.ids, o.sampled_mask = rev.ids, rev.sampled_mask
            if originals[i].logprobs is not None and rev.logprobs is not None:
                o.logprobs = list(originals[i].logprobs[: rev.n_kept]) + [math.nan] * rev.n_scaffold + rev.logprobs
            o.ok = rev.completed  # correctness is checked next
        checks = check_completions([r.text for r in revisions], [golds[i] if golds[i] is not None else "" for i in todo],
                                   mode=a.accuracy_mode, tags=self._tags, require_close=self._require_close) if revisions else []
        n_correct = 0
        for i, c in zip(todo, checks):
            correct = c.ok and golds[i] is not None
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

        # metrics of this rollout, over every rank's samples: TRL logs rank 0's `_metrics` only, so a local
        # value would hide the other ranks (e.g. a reflection model that fails only for rank 1's samples)
        n = len(originals)
        think = [s.think_tokens for s in segs]
        dens = [count_reflections(s.split.think, self.rea_args.reflection_regex) / t for s, t in zip(segs, think) if t > 0]
        saved = [t for t, rev in zip(rows_all.tokens_saved, rows_all.is_revision) if rev]
        totals = self._sum_over_ranks([
            sum(o.error is not None for o in outcomes), n, sum(o.ok for o in outcomes), n_correct, len(todo),
            sum(r.completed for r in revisions), len(revisions), n_skipped, sum(saved), sum(dens), len(dens), sum(think)])
        (failures, n_all, accepted, correct, tried, finished, made, skipped, saved_sum, dens_sum, dens_n, think_sum) = totals
        slowest = self._max_over_ranks([t_gen, t_score, t_rev])
        mode = "train" if self.model.training else "eval"
        m = self._metrics[mode]
        m["revision/failures"].append(failures)
        m["revision/accept_rate"].append(accepted / n_all)
        m["revision/accuracy"].append(correct / max(1, tried))
        m["revision/answer_finished"].append(finished / max(1, made))
        m["revision/skipped_no_result"].append(skipped)
        m["revision/tokens_saved"].append(saved_sum / max(1, accepted))
        m["reflection/density"].append(dens_sum / dens_n if dens_n else 0.0)
        m["completions/think_tokens"].append(think_sum / n_all)
        m["timing/generate_s"].append(slowest[0])
        m["timing/reflection_s"].append(slowest[1])
        m["timing/revision_s"].append(slowest[2])

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
            FINISHED_KEY: [o.finished for o in originals for _ in range(2)],
        }
        answered = {i: rev.completed for i, rev in zip(todo, revisions)}
        for r, rev in enumerate(rows_all.is_revision):  # a revision row: did its answer reach EOS?
            if rev and not rows_all.revision_replaced[r]:
                out[FINISHED_KEY][r] = answered.get(r // 2, False)
        # Discard means discard: a dropped revision gets an all-zero mask, so it reaches neither the
        # policy loss, the KL term, nor the token count that normalises the loss (bnpo / dapo).
        masks = [m if a.mask_scaffold_tokens else [1] * len(m) for m in rows_all.env_mask]
        masks = [[0] * len(m) if dropped else m for m, dropped in zip(masks, rows_all.revision_failed)]
        if a.mask_scaffold_tokens or any(rows_all.revision_failed):
            out["env_mask"] = masks
        return out

    # -- true lengths ---------------------------------------------------------------------------
    def _log_lengths(self, inputs: list[dict[str, Any]], completion_ids_list: list[list[int]], mode: str) -> None:
        """The policy's own lengths, over every rank's rows. TRL's `completions/mean_length` (and min/max,
        mean_terminated_length, num_tokens) sums the loss mask, so a dropped revision counts as 0 tokens and a
        masked scaffold is missing: with REA-RL it reads shorter than what the policy wrote.

        lengths/samples/*: the G parallel samples per prompt (all rows without revision) - the headline length.
        lengths/revisions/mean: accepted revisions, whole (kept thinking + scaffold + finished answer); rows that
        were dropped or replaced by a copy of their original are neither.
        lengths/trained/mean: rows that reach the loss (every row but the dropped ones), whole."""
        eos = set(self._eos_ids())
        samples, revisions, trained = [], [], []
        for inp, ids in zip(inputs, completion_ids_list):
            n = len(ids)
            is_rev = bool(inp.get("is_revision", False))
            dropped, copied = bool(inp.get("revision_failed", False)), bool(inp.get("revision_replaced", False))
            if not is_rev:
                samples.append((n, bool(ids) and ids[-1] in eos))
            elif not dropped and not copied:
                revisions.append(n)
            if not dropped:
                trained.append(n)
        finished = [n for n, f in samples if f]
        big = 1e18
        (n_s, sum_s, n_f, sum_f, n_r, sum_r, n_t, sum_t) = self._sum_over_ranks([
            len(samples), sum(n for n, _ in samples), len(finished), sum(finished), len(revisions), sum(revisions),
            len(trained), sum(trained)])
        hi, neg_lo = self._max_over_ranks([max((n for n, _ in samples), default=-big),
                                           -min((n for n, _ in samples), default=big)])
        m = self._metrics[mode]
        if n_s:
            m["lengths/samples/mean"].append(sum_s / n_s)
            m["lengths/samples/min"].append(-neg_lo)
            m["lengths/samples/max"].append(hi)
            m["lengths/samples/finished_share"].append(n_f / n_s)
        if n_f:
            m["lengths/samples/finished_mean"].append(sum_f / n_f)
        if n_r:
            m["lengths/revisions/mean"].append(sum_r / n_r)
        if n_t:
            m["lengths/trained/mean"].append(sum_t / n_t)

    # -- sampler vs trainer log-probs -------------------------------------------------------------
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if torch.is_grad_enabled():  # the loss's forward: kept for _log_sampling_drift
            self._loss_logps = out[0]
        return out

    def _compute_loss(self, model, inputs):
        self._loss_logps = None
        loss = super()._compute_loss(model, inputs)
        if (self.use_vllm and not self.vllm_importance_sampling_correction and self._loss_logps is not None
                and inputs.get("sampling_per_token_logps") is not None):
            self._log_sampling_drift(self._loss_logps.detach(), inputs)
        self._loss_logps = None
        return loss

    def _log_sampling_drift(self, logps: torch.Tensor, inputs: dict[str, Any]) -> None:
        """With vLLM and the importance-sampling correction off (the recipes), TRL logs no ratio: log what it
        would have been. Per token: trainer log-prob - sampler log-prob over the loss mask; per sequence: their
        sum (TRL's default sequence-level mode multiplies each sequence's loss by its exp). A sum that drifts with
        length (a top-k-renormalised sampler log-prob, for instance) would be a length-dependent weight
        (docs/training.md#importance-sampling-correction)."""
        mask = inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]
        diff = torch.nan_to_num((logps - inputs["sampling_per_token_logps"]) * mask, nan=0.0)
        rows = mask.sum(dim=1) > 0
        seq = diff.sum(dim=1)[rows].double()
        n_tok = mask.sum().double()
        (tok_sum, n, seq_sum, ratio_sum, n_seq) = self._sum_over_ranks([
            float(diff.sum()), float(n_tok), float(seq.sum()), float(seq.exp().sum()), float(rows.sum())])
        lo, hi = self._max_over_ranks([float(-seq.min()) if len(seq) else -math.inf, float(seq.max()) if len(seq) else -math.inf])
        m = self._metrics["train" if self.model.training else "eval"]
        if n:
            m["sampling/logprob_diff/token_mean"].append(tok_sum / n)
        if n_seq:
            m["sampling/logprob_diff/seq_mean"].append(seq_sum / n_seq)
            m["sampling/logprob_diff/seq_min"].append(-lo)
            m["sampling/logprob_diff/seq_max"].append(hi)
            m["sampling/seq_ratio_if_corrected/mean"].append(ratio_sum / n_seq)

    # -- answer checking --------------------------------------------------------------------------
    def _log_verifier(self, mode: str) -> None:
        """Answer checks of this step (the rewards' and the revisions'), over all ranks: a check that times out
        scores 0 like a wrong answer, so timeouts must be seen. `verify/timeouts`, `verify/timeout_rate`
        (timeouts / checks) and `verify/worker_deaths`; a rate above `verify_timeout_warn_rate` is logged as a
        warning with what to do."""
        from rearl.core.verify import default_pool

        pools = {id(p): p for p in [getattr(f, "pool", None) for f in self.reward_funcs] + [default_pool()] if p is not None}
        seen = getattr(self, "_verify_seen", {})
        now = {k: dict(p.stats) for k, p in pools.items()}
        delta = {key: sum(now[k].get(key, 0) - seen.get(k, {}).get(key, 0) for k in now) for key in ("done", "timeouts", "died")}
        self._verify_seen = now
        done, timeouts, died = self._sum_over_ranks([delta["done"], delta["timeouts"], delta["died"]])
        checks = done + timeouts
        m = self._metrics[mode]
        m["verify/timeouts"].append(timeouts)
        m["verify/timeout_rate"].append(timeouts / checks if checks else 0.0)
        m["verify/worker_deaths"].append(died)
        limit = self.rea_args.verify_timeout_warn_rate
        if checks and timeouts / checks > limit and self.accelerator.is_main_process:
            import logging

            timeout = next(iter(pools.values())).timeout
            logging.getLogger("rearl").warning(
                "answer checking: %d of %d checks timed out this step (%.1f%% > verify_timeout_warn_rate %.1f%%); a "
                "timed-out answer scores 0 like a wrong one. The workers get too little CPU (offloaded optimizer, "
                "vLLM on the same cores?) or the timeout (%gs, REARL_VERIFY_TIMEOUT) is too short",
                int(timeouts), int(checks), 100 * timeouts / checks, 100 * limit, timeout)

    # -- group policies -------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        a = self.rea_args
        mode = "train" if self.model.training else "eval"
        self._log_lengths(inputs, completion_ids_list, mode)
        self._log_verifier(mode)
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
