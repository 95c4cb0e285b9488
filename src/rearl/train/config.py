"""Training configuration: `REARLConfig` (TRL's `GRPOConfig` plus REA-RL's knobs) and YAML loading.

A recipe is one flat YAML mapping. Keys are dispatched to `ModelArgs`, `DataArgs` or `REARLConfig`
by name; an unknown key is an error naming it (TRL 0.16 silently dropped unknown keys, which made
two of the authors' YAML settings dead, docs/training.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from trl import GRPOConfig

FAILED_REVISION_POLICIES = ("drop", "duplicate_original")
ZERO_ACCURACY_POLICIES = ("auto", "zero_advantage", "keep")
LENGTH_REWARDS = ("none", "refined", "kimi", "alp")


@dataclass
class REARLConfig(GRPOConfig):
    """`GRPOConfig` + REA-RL.

    With ``revision`` on, each TRL group of ``num_generations`` rows holds G = num_generations / 2
    policy samples and their G revisions, interleaved (original_1, revised_1, ...), as the paper's
    2G groups (docs/method.md#the-training-step). ``num_generations: 8`` is therefore the paper's G = 4.
    """

    # -- sequential revision (the reflection model) --
    revision: bool = field(default=True, metadata={"help": "Cut each sample after its answer and let the policy finish it."})
    reflection_model: str = field(default="default", metadata={
        "help": "Reflection model: a path, 'default' (the embedded model), an OpenAI-compatible server URL, or "
                "'oracle' (the gold-answer detector, a free teacher)."})
    reflection_tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer of a served reflection model."})
    reflection_timeout: float = field(default=120.0, metadata={
        "help": "Served reflection model: seconds per request before it counts as failed."})
    reflection_retries: int = field(default=3, metadata={
        "help": "Served reflection model: retries of a failed request (back-off 0.5 s, doubling) before the "
                "sample's revision fails (`revision/failures`); the step goes on."})
    reflection_window_tokens: int | None = field(default=None, metadata={
        "help": "Score the trace in windows of paragraphs within this many policy tokens (None: as the reflection "
                "model was trained, from its rearl_reflector.json; 0: the whole trace)."})
    reflection_mode: str = field(default="forward", metadata={"help": "Reflection scoring: 'forward' or 'generate'."})
    reflection_position: str = field(default="normal", metadata={"help": "Cut position: strong, normal (paper) or weak."})
    reflection_partial_labels: str = field(default="fail", metadata={
        "help": "A reply that labels fewer paragraphs than the reflection model was shown (generate mode): 'fail' "
                "(that sample's revision fails, counted in revision/failures) or 'think' (the authors' code: the "
                "missing labels count as Think, so the cut falls back toward the cap)."})
    revision_max_tokens: int = field(default=256, metadata={"help": "Token budget of the revised answer."})
    revision_scaffold: str = field(default="\n</think>\n\n**Final Answer:**\n\n", metadata={
        "help": "Text inserted after the kept thinking."})
    failed_revision_policy: str = field(default="drop", metadata={
        "help": "A revision that is wrong or unfinished: 'drop' (paper: excluded from the group statistics, no "
                "gradient) or 'duplicate_original' (authors' code: replaced by a copy of its original)."})
    zero_accuracy_groups: str = field(default="auto", metadata={
        "help": "Groups where every completion is wrong: 'zero_advantage', 'keep', or 'auto' (the authors' code: "
                "zero_advantage with revision on, keep without)."})
    mask_scaffold_tokens: bool = field(default=False, metadata={
        "help": "Exclude the inserted scaffold tokens from the loss (the authors train on them)."})
    short_trace_rule: str = field(default="drop_last_part", metadata={
        "help": "When the cut is the trace's last paragraph (n < 10 with no Result flagged): 'drop_last_part' "
                "(the authors' code: also drop its last blank-line part, so the revision still removes something) "
                "or 'none' (keep the whole paragraph: the revision re-answers the whole trace)."})
    revise_without_result: str = field(default="cap", metadata={
        "help": "When the reflection model flags no Result paragraph: 'cap' (the authors' code: cut at the cap, "
                "~5% from the end) or 'skip' (no revision; the row is handled as a failed revision)."})
    # -- generation --
    rollout_backend: str = field(default="auto", metadata={
        "help": "In-process sampling when use_vllm is off: 'hf' (transformers' generate), 'lean' (rearl's batched "
                "KV-cache decoder for Llama/Qwen2-shaped models in full weights, rearl.backends.lean: 1.7-2x generate "
                "on one CPU core, bench/rollout_throughput.py) or 'auto' (lean on CPU where it supports the model and "
                "the sampling settings, else hf)."})
    vllm_engine_kwargs: dict[str, Any] | None = field(default=None, metadata={
        "help": "vLLM colocate mode: extra `vllm.LLM` arguments (e.g. {enable_prefix_caching: true, "
                "enforce_eager: true}) on top of TRL's. On CPU the policy's dtype is added unless given "
                "(docs/training.md#vllm-colocate-on-cpu)."})
    # -- rewards --
    accuracy_mode: str = field(default="answer_part", metadata={
        "help": "'answer_part' (the last box after </think>, the paper), 'last_boxed_anywhere' (authors' code) or "
                "'math_verify' (math-verify's own extraction on the answer part: unboxed answers, several boxes)."})
    require_think_close: bool | None = field(default=None, metadata={
        "help": "Score a completion without a closing think tag as wrong. None (default): on when the chat template "
                "opens <think> in the prompt (R1-distill), where a completion cut off mid-thinking carries no tag."})
    verify_timeout_warn_rate: float = field(default=0.01, metadata={
        "help": "Warn when more than this share of a step's answer checks time out (a timed-out check scores 0; "
                "logged as verify/timeouts and verify/timeout_rate every step)."})
    require_eos: bool = field(default=False, metadata={
        "help": "Score a completion that did not reach EOS (cut off by max_completion_length) as wrong."})
    length_reward: str = field(default="refined", metadata={
        "help": "'refined' (REA-RL), 'kimi', 'alp' (adaptive length penalty: scaled by the problem's solve rate, "
                "arXiv 2506.05256) or 'none'."})
    alp_beta: float = field(default=1.0, metadata={
        "help": "ALP's coefficient: a completion of max_completion_length tokens on a problem every sample solves "
                "loses this much reward."})
    length_unit: str = field(default="tokens", metadata={"help": "'tokens' or 'chars'."})
    length_scope: str = field(default="per_problem", metadata={"help": "Kimi reward scope: 'per_problem' or 'batch'."})
    length_units: str = field(default="code", metadata={"help": "Refined reward units: 'code' (wrong = -0.5) or 'paper'."})
    reflection_reward: bool = field(default=True, metadata={"help": "Add the reflection-density reward."})
    reflection_threshold: float | None = field(default=None, metadata={
        "help": "T, tokens per reflection (the authors' 225.09 for R1-7B); or give reflection_calibration."})
    reflection_calibration: str | None = field(default=None, metadata={"help": "A `rearl calibrate` JSON file."})
    reflection_regex: str = field(default="authors", metadata={"help": "'authors' or 'word' (word boundaries)."})
    reflection_reward_form: str = field(default="code", metadata={"help": "'code': min(D*T,1); 'paper': min(0,D/D_q-1)."})

    def __post_init__(self):
        super().__post_init__()
        _check(self.failed_revision_policy, FAILED_REVISION_POLICIES, "failed_revision_policy")
        _check(self.zero_accuracy_groups, ZERO_ACCURACY_POLICIES, "zero_accuracy_groups")
        _check(self.length_reward, LENGTH_REWARDS, "length_reward")
        _check(self.reflection_mode, ("forward", "generate"), "reflection_mode")
        _check(self.reflection_position, ("strong", "normal", "weak"), "reflection_position")
        _check(self.reflection_partial_labels, ("fail", "think"), "reflection_partial_labels")
        _check(self.short_trace_rule, ("drop_last_part", "none"), "short_trace_rule")
        _check(self.revise_without_result, ("cap", "skip"), "revise_without_result")
        _check(self.rollout_backend, ("auto", "hf", "lean"), "rollout_backend")
        if self.revision and self.num_generations % 2:
            raise ValueError(f"with revision on, num_generations ({self.num_generations}) must be even: G samples + G revisions")
        g_eval = self.num_generations_eval or self.num_generations
        if self.revision and g_eval % 2:
            raise ValueError(f"with revision on, num_generations_eval ({g_eval}) must be even: G samples + G revisions")
        if self.revision and self.failed_revision_policy == "drop":
            check_drop_loss(self)
        if self.reflection_reward and self.reflection_threshold is None and self.reflection_calibration is None:
            raise ValueError("reflection_reward needs reflection_threshold or reflection_calibration")
        check_whole_groups(self)
        check_not_zero3(self)

    @property
    def groups_must_stay_whole(self) -> bool:
        """Whether every rank must hold whole groups: the revision rollout builds a group from its own G
        samples, and the per-problem length rewards see only the rank's rows."""
        return (self.revision or self.length_reward in ("refined", "alp")
                or (self.length_reward == "kimi" and self.length_scope == "per_problem"))

    @property
    def parallel_samples(self) -> int:
        """G: policy samples per prompt."""
        return self.num_generations // 2 if self.revision else self.num_generations


PER_SEQUENCE_LOSSES = ("grpo", "sapo", "dr_grpo", "luspo")
GENERATION_BATCH_LOSSES = ("dapo", "cispo")  # normalised by the tokens of the whole generation batch


def check_drop_loss(cfg: "REARLConfig", num_processes: int | None = None) -> None:
    """`failed_revision_policy: drop` is exact only when a dropped row changes no other row's weight.

    A dropped row has an all-zero loss mask. `dapo` / `cispo` divide each micro-batch's token sum by the
    token count of the whole generation batch (all ranks): the loss is then the same as if the row had
    never been sampled. `bnpo` divides by the micro-batch's own count, and TRL shuffles the generation
    batch before splitting it into micro-batches, so a row that lands beside a dropped one gets more
    weight per token (1 + L'/L against a kept partner of length L'); it is the same as dapo only when one process's
    micro-batch is the whole generation batch. Per-sequence losses still count the dropped row in
    their row average."""
    if cfg.loss_type in GENERATION_BATCH_LOSSES:
        return
    procs = cfg.world_size if num_processes is None else num_processes
    if cfg.loss_type == "bnpo" and cfg.steps_per_generation == 1 and procs <= 1:
        return  # one micro-batch = the generation batch: bnpo's normaliser is dapo's
    why = ("averages over rows and would count the dropped rows" if cfg.loss_type in PER_SEQUENCE_LOSSES else
           f"normalises each micro-batch by its own tokens, so with steps_per_generation "
           f"{cfg.steps_per_generation} and {procs} process(es) the rows that share a micro-batch with a dropped "
           f"revision would get more weight")
    raise ValueError(f"failed_revision_policy 'drop' needs a loss normalised over the whole generation batch "
                     f"(loss_type dapo or cispo; docs/method.md#the-training-step); {cfg.loss_type!r} {why}")


def check_reflection_model(cfg: "REARLConfig", device_type: str, num_processes: int = 1) -> list[str]:
    """Where the reflection model lives, checked at start (docs/training.md#where-the-reflection-model-lives).
    An error for a GPU run left on the embedded default (SmolLM2-135M, a CPU test model, not a reflection model
    trained for the policy); warnings, returned, for a local-path model that every training process loads."""
    if not cfg.revision or cfg.reflection_model == "oracle":
        return []
    from rearl.backends import is_url

    if cfg.reflection_model == "default" and device_type != "cpu":
        raise ValueError(
            "reflection_model is 'default' (the embedded SmolLM2-135M, a CPU test model) in a GPU run: set "
            "reflection_model to your reflection model, served (`vllm serve MODEL --port 8001`, then "
            "reflection_model: http://HOST:8001 and reflection_tokenizer: MODEL) or a local path")
    if not is_url(cfg.reflection_model) and device_type != "cpu" and num_processes > 1:
        return [f"reflection_model {cfg.reflection_model!r} is a local model: each of the {num_processes} training "
                f"processes loads its own copy on its GPU; serving it once (vllm serve) saves that memory"]
    return []


def zero_stage(cfg: "REARLConfig", env: Any = None) -> int | None:
    """The DeepSpeed ZeRO stage this run would use: from `accelerate launch` (its environment) or from the
    config's own `deepspeed` setting (a JSON path or a dict); None without DeepSpeed."""
    import json
    import os

    env = os.environ if env is None else env
    if str(env.get("ACCELERATE_USE_DEEPSPEED", "")).lower() == "true" and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        return int(env["ACCELERATE_DEEPSPEED_ZERO_STAGE"])
    ds = getattr(cfg, "deepspeed", None)
    if isinstance(ds, str) and ds.endswith(".json") and Path(ds).exists():
        ds = json.loads(Path(ds).read_text())
    if isinstance(ds, dict):
        stage = (ds.get("zero_optimization") or {}).get("stage")
        return int(stage) if stage is not None else None
    return None


def check_not_zero3(cfg: "REARLConfig", env: Any = None) -> None:
    """ZeRO-3 is refused at start (docs/training.md#several-processes): it partitions the parameters, so
    merging the LoRA adapter into the policy at the end reads empty shards, and with in-process generation a
    rank with no revision to write (a reflection outage, `revise_without_result: skip`) skips a generate call
    the other ranks wait for in ZeRO-3's synchronised generation: a hang."""
    if zero_stage(cfg, env) == 3:
        raise ValueError("DeepSpeed ZeRO-3 is not supported by rearl train yet (the LoRA merge at the end and the "
                         "revision step's generation both break under partitioned parameters); use ZeRO-2 "
                         "(recipes/accelerate/zero2.yaml, the authors' setting) or DDP")


def check_whole_groups(cfg: "REARLConfig", num_processes: int | None = None) -> None:
    """Each rank must hold whole groups (docs/training.md#several-processes). TRL only checks that the
    *global* generation batch is a multiple of `num_generations`; with several processes a group can
    then straddle two ranks, and the rank's rollout would silently see half a group."""
    if not cfg.groups_must_stay_whole:
        return
    procs = cfg.world_size if num_processes is None else num_processes
    if procs <= 1:
        return  # TRL's own check covers one process
    local = cfg.per_device_train_batch_size * cfg.steps_per_generation  # a rank's rows per generation
    if local % cfg.num_generations:
        raise ValueError(
            f"REA-RL needs whole groups on every rank: with {procs} processes each rank generates "
            f"{local} rows per step (per_device_train_batch_size {cfg.per_device_train_batch_size} x "
            f"steps_per_generation {cfg.steps_per_generation}), not a multiple of num_generations "
            f"{cfg.num_generations}, so a group would be split across ranks; make "
            f"per_device_train_batch_size x steps_per_generation a multiple of num_generations")
    g_eval = cfg.num_generations_eval or cfg.num_generations
    if cfg.eval_strategy != "no" and cfg.per_device_eval_batch_size % g_eval:
        raise ValueError(
            f"REA-RL needs whole groups on every rank: per_device_eval_batch_size {cfg.per_device_eval_batch_size} "
            f"is not a multiple of num_generations_eval {g_eval}")


def _check(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


@dataclass
class ModelArgs:
    model_name_or_path: str = field(default="default", metadata={
        "help": "The policy: a hub id, a local path, or 'default' (the embedded SmolLM2-135M-Instruct)."})
    dtype: str = field(default="float32", metadata={"help": "The policy's dtype: float32, bfloat16 or float16."})
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter (saved merged in output_dir/merged too)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | str = field(default="all-linear", metadata={
        "help": "LoRA target modules: a list of module names or 'all-linear'."})


@dataclass
class DataArgs:
    train_files: list[str] | str = field(default_factory=list, metadata={
        "help": "Training problems: JSONL files with a problem and a gold answer field (relative to the recipe)."})
    problem_field: str | None = field(default=None, metadata={"help": "Problem field (auto: problem, question, prompt)."})
    answer_field: str | None = field(default=None, metadata={"help": "Gold answer field (auto: answer, gold_answer, ...)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many problems (after shuffling)."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the problems' order."})


def rearl_fields() -> set[str]:
    """The fields REARLConfig adds to TRL's GRPOConfig."""
    return {f.name for f in dataclasses.fields(REARLConfig)} - {f.name for f in dataclasses.fields(GRPOConfig)}


def recipe_keys_help() -> str:
    """`rearl train --help`'s list of recipe keys: every field rearl adds, grouped by dataclass, with its default
    and help; TRL's GRPOConfig fields are all accepted too and are listed by name."""
    import textwrap

    def group(title: str, cls: type, names: set[str] | None = None) -> list[str]:
        lines = [title]
        for f in dataclasses.fields(cls):
            if names is not None and f.name not in names:
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            text = f"{f.name} (default {default!r}): {f.metadata.get('help', '')}"
            lines += textwrap.wrap(text, 100, initial_indent="  ", subsequent_indent="      ")
        return lines

    trl = sorted(f.name for f in dataclasses.fields(GRPOConfig) if f.init)
    out = ["recipe keys (YAML or key=value; docs/training.md):", ""]
    out += group("model (ModelArgs):", ModelArgs) + [""] + group("data (DataArgs):", DataArgs) + [""]
    out += group("REA-RL (REARLConfig):", REARLConfig, rearl_fields()) + [""]
    out += ["TRL (GRPOConfig, TRL 1.16; help: python -c 'from trl import GRPOConfig; help(GRPOConfig)'):"]
    out += textwrap.wrap(", ".join(trl), 100, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(out)


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. Under YAML 1.1 `save_strategy: no` would load as False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _Yaml12Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))


# YAML 1.2 floats: "1e-5" (no dot) is a number too.
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", __import__("re").compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"override {it!r} is not key=value")
        k, v = it.split("=", 1)
        out[k.strip().lstrip("-").replace("-", "_")] = load_yaml(v) if v != "" else None
    return out


def _field_types(cls) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: those fields are not type-checked
        return {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}


def _accepts(tp: Any, value: Any) -> tuple[bool, str]:
    """Whether `value` (as YAML read it) fits the annotation `tp`, and the type's plain name. Annotations
    this does not know (enums, TRL's unions with classes) accept anything: their dataclass checks them."""
    import types
    import typing

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names, ok = [], False
        for a in args:
            if a is type(None):
                ok |= value is None
                names.append("null")
                continue
            good, name = _accepts(a, value)
            ok |= good
            names.append(name)
        return ok, " or ".join(names)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return value in choices, f"one of {choices}"
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        if not isinstance(value, list):
            return False, f"a list ({'[a, b]' if inner is Any else '[' + _accepts(inner, None)[1] + ', ...]'})"
        return all(_accepts(inner, v)[0] for v in value), f"a list of {_accepts(inner, None)[1]}"
    if origin is dict or tp is dict:
        return isinstance(value, dict), "a mapping ({key: value})"
    if tp is bool:
        return isinstance(value, bool), "a boolean (true or false)"
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), "an integer"
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if tp is str:
        return isinstance(value, str), "a string"
    if tp is Any:
        return True, "anything"
    return True, getattr(tp, "__name__", str(tp))


def check_types(raw: dict[str, Any], sources: dict[str, str]) -> None:
    """Every value against its dataclass field's type, when it is read: `revision=no` would otherwise be
    the string 'no', which is truthy, and `max_steps=abc` would fail much later in a transformers traceback."""
    hints: dict[str, Any] = {}
    for cls in (REARLConfig, DataArgs, ModelArgs):
        hints.update(_field_types(cls))
    bad = []
    for k, v in raw.items():
        if k not in hints:
            continue
        ok, expected = _accepts(hints[k], v)
        if not ok:
            bad.append(f"{sources.get(k, 'defaults')}: {k}={v!r} ({type(v).__name__}) is not {expected}")
    if bad:
        raise ValueError("wrong type:\n  " + "\n  ".join(bad))


def read_recipe(path: str | Path, _seen: tuple[str, ...] = (), sources: dict[str, str] | None = None) -> dict[str, Any]:
    """A recipe's keys; `include: other.yaml` (or a list) pulls in shared keys first, this file wins.
    `sources`, when given, gets the file each key came from."""
    p = Path(path).resolve()
    if str(p) in _seen:
        raise ValueError(f"{p}: include cycle")
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such recipe")
    loaded = load_yaml(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{p}: a recipe is a YAML mapping of key: value")
    inc = loaded.pop("include", None) or []
    out: dict[str, Any] = {}
    for i in [inc] if isinstance(inc, str) else inc:
        out.update(read_recipe(p.parent / i, _seen + (str(p),), sources))
    out.update(loaded)
    if sources is not None:
        sources.update({k: f"recipe {p}" for k in loaded})
    return out


def resolved_settings(model: ModelArgs, data: DataArgs, cfg: REARLConfig) -> dict[str, Any]:
    """What a run will use: every model, data and REA-RL setting, and the TRL / transformers settings that
    differ from GRPOConfig's defaults (`rearl train --dry-run`)."""
    def plain(v: Any) -> Any:
        import enum

        if isinstance(v, enum.Enum):
            return plain(v.value)
        if v is None:
            return v
        for base in (bool, int, float, str):  # a subclass (a str-valued enum-like) as its plain type, for YAML
            if isinstance(v, base):
                return base(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return str(getattr(v, "value", v))

    ours = rearl_fields()
    base = GRPOConfig(output_dir=cfg.output_dir, use_cpu=cfg.use_cpu, bf16=cfg.bf16)
    trl = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(GRPOConfig) if f.init
           and getattr(cfg, f.name, None) != getattr(base, f.name, None)}
    return {
        "model": {k: plain(v) for k, v in dataclasses.asdict(model).items()},
        "data": {k: plain(v) for k, v in dataclasses.asdict(data).items()},
        "rea_rl": {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(REARLConfig) if f.name in ours},
        "trl (differs from GRPOConfig's defaults)": {k: plain(v) for k, v in sorted(trl.items())},
    }


def load_config(path: str | None, overrides: Sequence[str] = (), **defaults: Any) -> tuple[ModelArgs, DataArgs, REARLConfig]:
    """Read a recipe (flat YAML) plus `key=value` overrides into the three argument dataclasses."""
    raw: dict[str, Any] = dict(defaults)
    sources: dict[str, str] = {}
    if path:
        raw.update(read_recipe(path, sources=sources))
    over = parse_overrides(overrides)
    raw.update(over)
    sources.update({k: "command line" for k in over})
    m_keys, d_keys, t_keys = _fields(ModelArgs), _fields(DataArgs), _fields(REARLConfig)
    unknown = sorted(set(raw) - m_keys - d_keys - t_keys)
    if unknown:
        where = f"{path}" if path else "overrides"
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    check_types(raw, sources)
    model = ModelArgs(**{k: v for k, v in raw.items() if k in m_keys})
    data = DataArgs(**{k: v for k, v in raw.items() if k in d_keys})
    if isinstance(data.train_files, str):
        data.train_files = [data.train_files]
    src = sources.get("train_files", "")
    if src.startswith("recipe "):
        # a recipe's relative paths are relative to the recipe's folder, wherever rearl is run from
        folder = Path(src[len("recipe "):]).parent
        data.train_files = [f if os.path.isabs(f) else os.path.normpath(folder / f) for f in data.train_files]
    cfg = REARLConfig(**{k: v for k, v in raw.items() if k in t_keys})
    return model, data, cfg
