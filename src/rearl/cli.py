"""The `rearl` command line. Every subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from . import __version__


def _table(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in rows:
        t.add_row(k, "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
    Console().print(t)


# -- detect ---------------------------------------------------------------------------------------
def cmd_detect(a: argparse.Namespace) -> int:
    from .detect import DetectConfig, detect_file, summary_path

    cfg = DetectConfig(
        input=a.input, out=a.out, tokenizer=a.tokenizer, detector=a.detector, position=a.position,
        second_half=not a.no_second_half, ratio=a.ratio, regex=a.regex, problem_field=a.problem_field,
        answer_field=a.answer_field, response_field=a.response_field, max_think_tokens=a.max_think_tokens,
        limit=a.limit, model=a.model, mode=a.mode, reflection_tokenizer=a.reflection_tokenizer, window_tokens=a.window_tokens,
        batch_size=a.batch_size, device=a.device,
    )
    s = detect_file(cfg, progress=not a.quiet)
    _table(
        f"rearl detect: {s['detector']}" + (f" ({s['position']})" if s["position"] else "") + f" on {os.path.basename(a.input)}",
        [
            ("traces", s["traces"]),
            ("failures", s["failures"]),
            ("mean thinking tokens", s["mean_think_tokens"]),
            ("mean kept thinking tokens", s["mean_kept_think_tokens"]),
            ("mean % thinking tokens removed", s["mean_pct_think_removed"]),
            ("% of all thinking tokens removed", s["pct_think_removed_total"]),
            ("traces with gold answer", s["traces_with_gold"]),
            ("% with answer kept", s["pct_answer_kept"]),
            ("originally correct traces", s["originally_correct"]),
            ("% answer kept (originally correct)", s["pct_answer_kept_of_correct"]),
            ("mean % removed (originally correct)", s["mean_pct_think_removed_of_correct"]),
        ],
    )
    print(f"records: {a.out}\nsummary: {summary_path(a.out)}")
    return 0


# -- revise ---------------------------------------------------------------------------------------
def cmd_revise(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .detect import summary_path
    from .revision import ReviseConfig, revise_file

    cfg = ReviseConfig(
        cuts=a.cuts, policy=a.policy, out=a.out, input=a.input, policy_tokenizer=a.policy_tokenizer,
        positions=a.positions.split(",") if a.positions else None, max_new_tokens=a.max_new_tokens,
        temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed, batch_size=a.batch_size,
        device=a.device, limit=a.limit,
    )
    res = revise_file(cfg, progress=not a.quiet)
    t = Table(title=f"rearl revise: {os.path.basename(a.cuts)} with {a.policy}", header_style="bold")
    for c in ("cut policy", "n", "accuracy %", "mean tokens", "token ratio %", "answer finished %"):
        t.add_column(c, justify="right" if c != "cut policy" else "left")
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in res["table"]:
        t.add_row(r["policy"], fmt(r["n"]), fmt(r["accuracy"]), fmt(r["mean_tokens"]), fmt(r["token_ratio"]), fmt(r["completed"]))
    Console().print(t)
    print(f"records: {a.out}\nsummary: {summary_path(a.out)}")
    return 0


# -- train ----------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    import os as _os

    _os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL's documented hook
    from .config import load_config
    from .train import train

    model_args, data_args, cfg = load_config(a.config, a.overrides)
    last = train(model_args, data_args, cfg, resume=a.resume)
    print(f"saved: {cfg.output_dir}")
    if last:
        print({k: v for k, v in last.items() if isinstance(v, (int, float))})
    return 0


# -- baseline -------------------------------------------------------------------------------------
def cmd_baseline(a: argparse.Namespace) -> int:
    from .baselines import BaselineConfig, train_baseline

    cfg = BaselineConfig(method=a.method, revised=a.revised, output_dir=a.out, base=a.base, position=a.position,
                         max_per_problem=a.max_per_problem, use_peft=not a.full, learning_rate=a.learning_rate,
                         max_steps=a.max_steps, per_device_train_batch_size=a.batch_size,
                         gradient_accumulation_steps=a.gradient_accumulation_steps, max_length=a.max_length, beta=a.beta)
    res = train_baseline(cfg)
    print(f"{a.method}: {res['examples']} examples, {res['global_step']} steps; saved {a.out}")
    return 0


# -- calibrate ------------------------------------------------------------------------------------
def cmd_calibrate(a: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from .io import write_json_atomic
    from .reflection import calibrate
    from .text import ThinkTags, segment
    from .traces import load_traces

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    traces = list(load_traces(a.responses, a.problem_field, a.answer_field, a.response_field))
    pairs, ids = [], []
    for t in traces:
        seg = segment(tok, text=t.response, tags=tags)
        pairs.append((seg.split.think, seg.think_tokens))
        ids.append(t.id)
    cal = calibrate(pairs, quantile=a.quantile, regex=a.regex, tokenizer_name=a.tokenizer, ids=ids)
    write_json_atomic(a.out, cal.to_json())
    rows: list[tuple[str, Any]] = [
        ("responses", cal.n_responses),
        ("regex", cal.regex),
        ("quantile q", cal.quantile),
        (f"T = p{round(100 * (1 - cal.quantile))} tokens per reflection", cal.threshold),
        (f"D_{cal.quantile:g} = 1/T (reflections per token)", f"{cal.density_quantile:.6f}"),
    ]
    rows += [(f"p{k} tokens per reflection", v) for k, v in cal.percentiles.items()]
    _table(f"rearl calibrate: {os.path.basename(a.responses)}", rows)
    if a.show_responses:
        for r in cal.per_response:
            print(f"{r['id']}\tthink_tokens={r['think_tokens']}\treflections={r['reflections']}\t"
                  f"tokens_per_reflection={r['tokens_per_reflection']:.1f}")
    print(f"written: {a.out}")
    return 0


# -- eval -----------------------------------------------------------------------------------------
def _int_list(s: str | None) -> list[int] | None:
    return [int(x) for x in s.split(",") if x.strip()] if s else None


def cmd_eval(a: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .evaluate import SUMMARY_COLUMNS, EvalConfig, evaluate, summary_rows
    from .eval_metrics import LEGEND

    cfg = EvalConfig(
        model=a.model, out=a.out, benchmarks=[b.strip() for b in a.benchmarks.split(",") if b.strip()],
        n=a.n if a.n == "auto" or not a.n.isdigit() else int(a.n), max_tokens=a.max_tokens, budgets=_int_list(a.budgets),
        data_dir=a.data_dir, limit=a.limit, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, seed=a.seed,
        backend=a.backend, tokenizer=a.tokenizer, lora=a.lora, batch_size=a.batch_size, device=a.device,
        dtype=a.dtype, concurrency=a.concurrency, threads=a.threads, reference=a.reference, regex=a.regex,
    )
    s = evaluate(cfg, progress=not a.quiet)
    # A pipe gets rich's 80 columns, too narrow for eleven columns: widen it when not on a terminal.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    for b in sorted(s["budgets"], reverse=True):
        t = Table(title=f"rearl eval: {a.model}, budget {b} tokens", header_style="bold", box=box.SIMPLE_HEAD)
        t.add_column("benchmark", no_wrap=True)
        t.add_column("n", justify="right", no_wrap=True)
        for h, _, _ in SUMMARY_COLUMNS:
            t.add_column(h, justify="right", no_wrap=True)
        for row in summary_rows(s, b):
            t.add_row(*row)
        console.print(t)
    print(LEGEND)
    tm = s["timing"]
    print(f"sampled {tm['generated_samples']} new samples in {tm['generation_seconds']:.0f}s, "
          f"scored in {tm['scoring_seconds']:.0f}s")
    print(f"samples: {os.path.join(a.out, 'samples.jsonl')}\nsummary: {os.path.join(a.out, 'summary.md')}")
    return 0


# -- report ---------------------------------------------------------------------------------------
def cmd_report(a: argparse.Namespace) -> int:
    from .report import make_report

    labels = [x.strip() for x in a.labels.split(",")] if a.labels else None
    res = make_report(a.runs, a.out, reference=a.reference, labels=labels)
    with open(os.path.join(a.out, "report.md"), encoding="utf-8") as f:
        print(f.read())
    print("written: " + ", ".join(os.path.join(a.out, f) for f in ["report.md", "report.json", *res["plots"].values()]))
    return 0


# -- reflector (label | split | train | eval) -----------------------------------------------------------
def cmd_reflector_label(a: argparse.Namespace) -> int:
    from .reflector_data import LabelConfig, label_file, labels_summary_path

    cfg = LabelConfig(
        inputs=a.input, out=a.out, tokenizer=a.tokenizer, teacher=a.teacher, judge_url=a.judge_url,
        judge_model=a.judge_model, api_key_env=a.api_key_env, use_gold=not a.no_gold, chunk_tokens=a.chunk_tokens,
        window_tokens=a.window_tokens, max_think_tokens=a.max_think_tokens, concurrency=a.concurrency,
        timeout=a.timeout, retries=a.retries, problem_field=a.problem_field, answer_field=a.answer_field,
        response_field=a.response_field, limit=a.limit,
    )
    s = label_file(cfg, progress=not a.quiet)
    _table(f"rearl reflector label: {s['teacher']}", [
        ("traces", s["traces"]), ("traces with a Result paragraph", s["traces_with_result"]),
        ("paragraphs", s["paragraphs"]), ("Result paragraphs", s["result_paragraphs"]),
        ("SFT examples", s["examples"]), ("examples with a Result", s["examples_with_result"]),
        ("judge chunks", s["chunks"]), ("malformed chunks (dropped)", s["malformed_chunks"]),
        ("malformed re-checks (rejected)", s["malformed_checks"]), ("traces failed (rerun to retry)", s["failed_traces"]),
    ])
    print(f"labels: {a.out}\nsummary: {labels_summary_path(a.out)}")
    return 1 if s["failed_traces"] else 0


def cmd_reflector_split(a: argparse.Namespace) -> int:
    from .reflector_data import split_file

    info = split_file(a.labels, a.out, a.heldout, a.seed)
    _table("rearl reflector split (by problem)", [
        ("train traces", info["train"]["traces"]), ("train problems", info["train"]["problems"]),
        ("held-out traces", info["heldout"]["traces"]), ("held-out problems", info["heldout"]["problems"]),
    ])
    print(f"written: {os.path.join(a.out, 'train.jsonl')}, {os.path.join(a.out, 'heldout.jsonl')}, "
          f"{os.path.join(a.out, 'split.json')}")
    return 0


def cmd_reflector_train(a: argparse.Namespace) -> int:
    from .reflector_train import load_train_config, train_reflector

    cfg = load_train_config(
        a.config, data=a.data, out=a.out, base=a.base, lora=False if a.full else None,
        learning_rate=a.learning_rate, num_train_epochs=a.epochs, max_steps=a.max_steps,
        per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
        max_length=a.max_length, negatives_per_positive=a.negatives_per_positive, max_examples=a.max_examples,
        save_steps=a.save_steps, report_to=a.report_to, device=a.device, seed=a.seed, num_threads=a.threads,
        resume=False if a.no_resume else None, force=True if a.force else None,
    )
    meta = train_reflector(cfg, progress=not a.quiet)
    if meta.get("skipped"):
        print(f"{cfg.out}: {meta['skipped']}")
        return 0
    _table(f"rearl reflector train: {cfg.base} -> {cfg.out}", [
        ("examples", meta["examples"]), ("examples with a Result", meta["examples_with_result"]),
        ("shortened / dropped (too long)", f"{meta['shortened']} / {meta['dropped_too_long']}"),
        ("training tokens", meta["train_tokens"]), ("optimizer steps", meta["steps"]),
        ("final train loss", meta["train_loss"]), ("seconds", meta["seconds"]),
        ("fine-tuning", "LoRA (merged)" if meta["lora"] else "full"),
    ])
    print(f"model: {cfg.out}")
    return 0


def cmd_reflector_eval(a: argparse.Namespace) -> int:
    from .reflector_eval import EvalConfig, evaluate_reflector

    cfg = EvalConfig(
        model=a.model, labels=a.labels, out=a.out, base_model=a.base_model, mode=a.mode,
        window_tokens=a.window_tokens, whole_trace=not a.no_whole_trace, ratios=a.ratio or [0.5],
        position=a.position, second_half=not a.no_second_half, device=a.device, batch_size=a.batch_size,
        max_context=a.max_context, num_threads=a.threads,
    )
    rep = evaluate_reflector(cfg, progress=not a.quiet)
    print(open(rep["paths"][0], encoding="utf-8").read())
    print("written: " + ", ".join(rep["paths"]))
    return 0


def _add_reflector(sub: Any) -> None:
    from .positions import POSITIONS

    rf = sub.add_parser("reflector", help="the reflection model: teacher labels, SFT training, quality report")
    rsub = rf.add_subparsers(dest="reflector_command", metavar="ACTION")

    lb = rsub.add_parser("label", help="teacher labels (oracle or LLM judge) and SFT examples for every trace")
    lb.add_argument("--input", required=True, action="append", help="traces JSONL (repeat for several files)")
    lb.add_argument("--out", required=True, help="labels JSONL, one record per trace (resumable)")
    lb.add_argument("--tokenizer", required=True, help="the policy's tokenizer (paragraph splitting, token budgets)")
    lb.add_argument("--teacher", choices=["oracle", "judge"], default="oracle")
    lb.add_argument("--judge-url", help="OpenAI-compatible server of the judge (…/v1/chat/completions)")
    lb.add_argument("--judge-model", help="model name to ask for, e.g. Qwen/Qwen2.5-32B-Instruct")
    lb.add_argument("--api-key-env", help="environment variable that holds the judge's API key")
    lb.add_argument("--no-gold", action="store_true", help="judge without the gold answer")
    lb.add_argument("--chunk-tokens", type=int, default=1024, help="judge step 1: paragraphs per request, in tokens")
    lb.add_argument("--window-tokens", type=int,
                    help="SFT examples: windows of paragraphs within this many tokens (default: the whole trace)")
    lb.add_argument("--max-think-tokens", type=int, help="truncate the thinking before splitting")
    lb.add_argument("--concurrency", type=int, default=4, help="judge requests in flight")
    lb.add_argument("--timeout", type=float, default=300.0)
    lb.add_argument("--retries", type=int, default=3)
    lb.add_argument("--limit", type=int, help="only the first N traces of each file")
    lb.add_argument("--quiet", action="store_true")
    _fields(lb)
    lb.set_defaults(func=cmd_reflector_label)

    sp = rsub.add_parser("split", help="split labels into train / held-out by problem")
    sp.add_argument("--labels", required=True)
    sp.add_argument("--out", required=True, help="directory for train.jsonl, heldout.jsonl, split.json")
    sp.add_argument("--heldout", type=float, default=0.25, help="fraction of problems held out")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_reflector_split)

    tr = rsub.add_parser("train", help="SFT (LoRA by default) on label files; saves a merged checkpoint")
    tr.add_argument("--config", help="YAML recipe (recipes/reflector/*.yaml); flags override it")
    tr.add_argument("--data", action="append", help="label JSONL (repeatable)")
    tr.add_argument("--base", help="base model: path or 'default' (embedded SmolLM2-135M-Instruct)")
    tr.add_argument("--out", help="output directory (merged model; checkpoints in OUT/checkpoints)")
    tr.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    tr.add_argument("--learning-rate", type=float)
    tr.add_argument("--epochs", type=float)
    tr.add_argument("--max-steps", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--grad-accum", type=int)
    tr.add_argument("--max-length", type=int)
    tr.add_argument("--negatives-per-positive", type=float, help="windows without a Result kept per window with one")
    tr.add_argument("--max-examples", type=int)
    tr.add_argument("--save-steps", type=int)
    tr.add_argument("--report-to", help="none | tensorboard | wandb ...")
    tr.add_argument("--device", help="cpu | cuda")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    tr.add_argument("--no-resume", action="store_true", help="ignore checkpoints in OUT/checkpoints")
    tr.add_argument("--force", action="store_true", help="retrain even if OUT holds a finished model")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_reflector_train)

    ev = rsub.add_parser("eval", help="quality report against teacher labels on held-out traces")
    ev.add_argument("--model", required=True, help="the trained reflection model (directory)")
    ev.add_argument("--labels", required=True, help="held-out label JSONL")
    ev.add_argument("--out", help="report prefix (default MODEL/eval_<labels>): writes .md and .json")
    ev.add_argument("--base-model", help="also report an untrained model, e.g. 'default'")
    ev.add_argument("--mode", choices=["forward", "generate"], default="forward")
    ev.add_argument("--window-tokens", type=int, help="score in windows (default: as trained; 0: whole trace only)")
    ev.add_argument("--no-whole-trace", action="store_true", help="skip scoring over the whole trace")
    ev.add_argument("--ratio", type=float, action="append", help="fixed-ratio baseline(s) (default 0.5)")
    ev.add_argument("--position", choices=POSITIONS, default="normal")
    ev.add_argument("--no-second-half", action="store_true")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--batch-size", type=int, default=4)
    ev.add_argument("--max-context", type=int, help="reflection prompt budget (default: the model's context)")
    ev.add_argument("--threads", type=int, help="torch CPU threads")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_reflector_eval)
    rf.set_defaults(func=lambda a: (rf.print_help(), 0)[1])


# -- models ---------------------------------------------------------------------------------------
def cmd_models_prepare(a: argparse.Namespace) -> int:
    from .models import prepare_default_model

    path = prepare_default_model(force=a.force, dtype=a.dtype)
    print(path)
    return 0


def cmd_models_path(a: argparse.Namespace) -> int:
    from .models import default_model_dir, is_prepared

    p = default_model_dir()
    print(p if is_prepared(p) else f"{p} (not prepared: run `rearl models prepare`)")
    return 0


# -- verify ---------------------------------------------------------------------------------------
def cmd_verify(a: argparse.Namespace) -> int:
    from .verify import VerifierPool, check_completions

    with VerifierPool(workers=1, timeout=a.timeout) as pool:
        r = check_completions([a.completion], [a.gold], mode=a.mode, pool=pool)[0]
    print(f"correct={r.ok} timeout={r.timeout}" + (f" error={r.error}" if r.error else ""))
    return 0 if r.ok else 1


def _fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem-field", help="problem/question field (auto: problem, question, prompt)")
    p.add_argument("--answer-field", help="gold answer field (auto: answer, gold_answer, gt_answer, gold, final_answer)")
    p.add_argument("--response-field",
                   help="response field (auto: response, completion, output, generated_responses, solution, thinking)")


def build_parser() -> argparse.ArgumentParser:
    from .detect import DETECTORS
    from .positions import POSITIONS
    from .reflection import REGEX_MODES

    p = argparse.ArgumentParser(prog="rearl", description="REA-RL: make reasoning models think less without thinking worse.")
    p.add_argument("--version", action="version", version=f"rearl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("detect", help="find where each trace already had its answer and how much thinking follows")
    d.add_argument("--input", required=True, help="traces JSONL")
    d.add_argument("--out", required=True, help="output JSONL, one record per trace (resumable)")
    d.add_argument("--tokenizer", required=True, help="the policy's tokenizer (path), for token counts and spans")
    d.add_argument("--detector", choices=DETECTORS, default="oracle")
    d.add_argument("--position", choices=POSITIONS, default="normal", help="cut policy of spec §2.5 (oracle)")
    d.add_argument("--no-second-half", action="store_true", help="let first-half paragraphs count for normal/weak")
    d.add_argument("--ratio", type=float, default=0.5, help="fraction kept by the ratio detector")
    d.add_argument("--regex", choices=REGEX_MODES, default="authors", help="reflection keyword matcher")
    d.add_argument("--max-think-tokens", type=int, help="truncate the thinking before splitting")
    d.add_argument("--limit", type=int, help="only the first N traces")
    d.add_argument("--model", help="reflection model for --detector model: path, 'default' (embedded) or server URL")
    d.add_argument("--mode", choices=["forward", "generate"], default="forward",
                   help="reflection scoring: one teacher-forced pass (forward) or greedy label generation (generate)")
    d.add_argument("--reflection-tokenizer", help="tokenizer path of a served reflection model (default: its name)")
    d.add_argument("--window-tokens", type=int,
                   help="--detector model: score windows of paragraphs within this many tokens (default: as the "
                        "model was trained, see its rearl_reflector.json; 0: the whole trace)")
    d.add_argument("--batch-size", type=int, default=4)
    d.add_argument("--device", default="cpu")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    _fields(d)
    d.set_defaults(func=cmd_detect)

    r = sub.add_parser("revise", help="complete detected cuts with a policy and compare with the originals")
    r.add_argument("--cuts", required=True, help="output of `rearl detect`")
    r.add_argument("--policy", required=True, help="policy: path, 'default' (embedded) or server URL")
    r.add_argument("--out", required=True, help="output JSONL, one record per (trace, cut) (resumable)")
    r.add_argument("--input", help="the traces (default: as recorded next to the cuts)")
    r.add_argument("--policy-tokenizer", help="tokenizer path of a served policy (default: its name)")
    r.add_argument("--positions", help="comma-separated cut names to revise (default: all in the records)")
    r.add_argument("--max-new-tokens", type=int, default=256)
    r.add_argument("--temperature", type=float, default=0.6)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--top-k", type=int, default=50)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--limit", type=int, help="only the first N traces")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_revise)

    t = sub.add_parser("train", help="GRPO / REA-RL training from a recipe (recipes/*.yaml)")
    t.add_argument("--config", help="recipe YAML (flat keys: model, data and REARLConfig/GRPOConfig fields)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="override any recipe key, e.g. max_steps=10")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("baseline", help="offline baselines from `rearl revise` outputs: sft | rpo")
    b.add_argument("method", choices=["sft", "rpo"])
    b.add_argument("--revised", required=True, help="output of `rearl revise`")
    b.add_argument("--out", required=True, help="output directory (a merged, plain checkpoint)")
    b.add_argument("--base", default="default", help="the policy the revisions came from")
    b.add_argument("--position", default="normal", help="which cut's revisions to use")
    b.add_argument("--max-per-problem", type=int, default=4)
    b.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA r16")
    b.add_argument("--learning-rate", type=float, default=2e-5)
    b.add_argument("--max-steps", type=int, default=-1, help="default: one epoch")
    b.add_argument("--batch-size", type=int, default=2)
    b.add_argument("--gradient-accumulation-steps", type=int, default=8)
    b.add_argument("--max-length", type=int, default=10240)
    b.add_argument("--beta", type=float, default=0.1, help="RPO/DPO beta")
    b.set_defaults(func=cmd_baseline)

    c = sub.add_parser("calibrate", help="reflection threshold T (tokens per reflection) from base-model responses")
    c.add_argument("--responses", required=True, help="responses JSONL")
    c.add_argument("--tokenizer", required=True, help="the policy's tokenizer (path)")
    c.add_argument("--quantile", type=float, default=0.2, help="q: T is the (1-q) percentile (default 0.2 -> p80)")
    c.add_argument("--regex", choices=REGEX_MODES, default="authors")
    c.add_argument("--out", default="calibration.json", help="where to write the calibration JSON")
    c.add_argument("--show-responses", action="store_true", help="print the per-response distribution")
    _fields(c)
    c.set_defaults(func=cmd_calibrate)

    from .benchmarks import BENCHMARKS

    e = sub.add_parser("eval", help="sample math benchmarks, score them at token budgets (spec §6.3)")
    e.add_argument("--model", default="default", help="path, 'default' (embedded model) or an OpenAI-compatible server URL")
    e.add_argument("--benchmarks", default="gsm8k,math500,gaokao2023en,amc23,aime24",
                   help=f"comma-separated: {', '.join(BENCHMARKS)}, or JSONL files of your own "
                        "(problem/question, answer, optional level; named after the file)")
    e.add_argument("--out", required=True, help="run directory (resumable: a rerun continues)")
    e.add_argument("--n", default="auto", help="samples per problem; auto = 8 for AIME/AMC, 1 otherwise")
    e.add_argument("--max-tokens", type=int, default=16384, help="generation budget")
    e.add_argument("--budgets", help="comma-separated scoring budgets <= --max-tokens (default: half and full)")
    e.add_argument("--data-dir", help="benchmark files (default: $REARL_SHARED/data/eval or ../shared/data/eval)")
    e.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    e.add_argument("--reference", help="a run directory whose mean tokens count as 100%% (token ratio)")
    e.add_argument("--backend", choices=["auto", "hf", "vllm", "server"], default="auto",
                   help="auto: server for a URL, else in-process transformers; vllm: offline engine (GPU)")
    e.add_argument("--tokenizer", help="tokenizer path for a served model (default: its name)")
    e.add_argument("--lora", help="vLLM: a LoRA adapter directory applied to --model")
    e.add_argument("--temperature", type=float, default=0.6)
    e.add_argument("--top-p", type=float, default=0.95)
    e.add_argument("--top-k", type=int, default=0, help="0 = off")
    e.add_argument("--seed", type=int, default=2)
    e.add_argument("--batch-size", type=int, default=8, help="transformers: samples per generate call")
    e.add_argument("--concurrency", type=int, default=16, help="server: requests in flight")
    e.add_argument("--device", default="cpu")
    e.add_argument("--dtype", help="model dtype (default: float32 on CPU, bfloat16 on GPU)")
    e.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is often faster on a busy CPU)")
    e.add_argument("--regex", choices=REGEX_MODES, default="authors", help="reflection keyword matcher")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="compare runs: the paper's table and plots")
    rp.add_argument("runs", nargs="+", help="evaluation run directories and/or training output directories")
    rp.add_argument("--out", required=True, help="report directory")
    rp.add_argument("--reference", help="run directory for the token ratio (default: the first evaluation run)")
    rp.add_argument("--labels", help="comma-separated names for the runs (default: directory names)")
    rp.set_defaults(func=cmd_report)

    m = sub.add_parser("models", help="the embedded default model (SmolLM2-135M-Instruct)")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    mp = msub.add_parser("prepare", help="convert the embedded GGUF into a cached HF checkpoint (once)")
    mp.add_argument("--force", action="store_true", help="rebuild even if cached")
    mp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    mp.set_defaults(func=cmd_models_prepare)
    mpath = msub.add_parser("path", help="print where the prepared checkpoint lives")
    mpath.set_defaults(func=cmd_models_path)
    m.set_defaults(func=lambda a: (m.print_help(), 0)[1])

    _add_reflector(sub)

    from .testbed.__main__ import add_subcommands as _testbed

    tb = sub.add_parser("testbed", help="the CPU testbed: a toy overthinking LRM and the whole REA-RL story")
    _testbed(tb.add_subparsers(dest="testbed_command"))
    tb.set_defaults(func=lambda a: (tb.print_help(), 0)[1])

    v = sub.add_parser("verify", help="check one completion against a gold answer (exit 0 if correct)")
    v.add_argument("--gold", required=True)
    v.add_argument("--completion", required=True)
    v.add_argument("--mode", default="answer_part", choices=["answer_part", "last_boxed_anywhere"])
    v.add_argument("--timeout", type=float, default=5.0)
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .io import DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        print(f"rearl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
