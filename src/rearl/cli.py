"""The `rearl` command line. Every subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from rearl import __version__
from rearl.options import add_options, from_args


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
    from rearl.offline.detect import DetectConfig, detect_file, summary_path

    cfg = from_args(DetectConfig, a)
    s = detect_file(cfg, progress=not a.quiet)
    _table(
        f"rearl detect: {s['detector']}" + (f" ({s['position']})" if s["position"] else "") + f" on {os.path.basename(cfg.input)}",
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
    print(f"{s['originally_correct']} of {s['traces']} traces end with a correct final answer.")
    if s["detector"] in ("oracle", "model") and s["position"] == "normal":
        print("Why this removes less than `rearl measure`'s removable share (the thinking after the first correct "
              "answer): the Normal cut is the paper's rule, not the first correct answer. It only looks for the answer "
              "in the second half of the paragraphs (--no-second-half lifts that), and when none is found there it "
              "cuts at a cap near the end (the last ~5% of paragraphs, at most 5, always go), so an answer reached early "
              "in a trace that keeps reasoning is not where it cuts; measure also counts correct traces only. The cap "
              "is also why a few cuts lose the answer: one first stated in those last paragraphs is cut off "
              "(\"% with answer kept\" below 100).")
    print(f"records: {a.out}\nsummary: {summary_path(a.out)}")
    return 0


# -- revise ---------------------------------------------------------------------------------------
def cmd_revise(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rearl.offline.detect import summary_path
    from rearl.offline.revise import ReviseConfig, revise_file

    cfg = from_args(ReviseConfig, a)
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


# -- data ----------------------------------------------------------------------------------------
def cmd_data_filter(a: argparse.Namespace) -> int:
    from rearl.offline.filter import FilterConfig, filter_file

    cfg = from_args(FilterConfig, a)
    s = filter_file(cfg, progress=not a.quiet)
    hist = ", ".join(f"{k} correct: {v}" for k, v in s["correct_samples_histogram"].items())
    print(f"kept {s['kept']} of {s['problems']} problems ({100 * s['kept_share']:.1f}%) with >= {cfg.min_correct} "
          f"correct of {cfg.samples} samples by {cfg.model}; {s['without_gold']} without a gold answer left out\n"
          f"  {hist}\nwritten: {cfg.out} (summary {cfg.out}.summary.json; samples in {cfg.out}.work/, resumable)")
    return 0


# -- train ----------------------------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    import os as _os

    _os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL's documented hook
    from rearl.train.config import load_config
    from rearl.train.run import train

    if a.dry_run:
        import yaml

        from rearl.train.config import resolved_settings

        try:
            model_args, data_args, cfg = load_config(a.config, a.overrides)
        except ValueError as e:
            if "bf16/gpu" not in str(e):
                raise
            # a GPU recipe checked on a machine without one: transformers refuses bf16 there, the rest is checked
            model_args, data_args, cfg = load_config(a.config, [*a.overrides, "use_cpu=true"])
            print("# no GPU here: checked with use_cpu=true added (transformers refuses bf16 without a GPU)")
        print(yaml.safe_dump(resolved_settings(model_args, data_args, cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    model_args, data_args, cfg = load_config(a.config, a.overrides)
    last = train(model_args, data_args, cfg, resume=a.resume)
    print(f"saved: {cfg.output_dir}")
    if last:
        print({k: v for k, v in last.items() if isinstance(v, (int, float))})
    return 0


# -- baseline -------------------------------------------------------------------------------------
def cmd_baseline(a: argparse.Namespace) -> int:
    from rearl.train.baselines import BaselineConfig, train_baseline

    cfg = from_args(BaselineConfig, a)
    res = train_baseline(cfg)
    print(f"{cfg.method}: {res['examples']} examples, {res['global_step']} steps; saved {cfg.output_dir}")
    return 0


# -- calibrate ------------------------------------------------------------------------------------
def cmd_calibrate(a: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from rearl.core.io import write_json_atomic
    from rearl.core.reflection import calibrate
    from rearl.core.text import ThinkTags, segment
    from rearl.core.traces import load_traces

    from rearl.core.io import check_local_path, refuse_same_path

    refuse_same_path(a.out, [a.responses])
    check_local_path(a.tokenizer, "--tokenizer")
    traces = list(load_traces(a.responses, a.problem_field, a.answer_field, a.response_field))
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
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
        (f"D_{cal.quantile:g} = 1/T (reflections per token; D_q: the density quantile the reward compares against)",
         f"{cal.density_quantile:.6f}"),
    ]
    rows += [(f"p{k} tokens per reflection", v) for k, v in cal.percentiles.items()]
    _table(f"rearl calibrate: {os.path.basename(a.responses)}", rows)
    if a.show_responses:
        for r in cal.per_response:
            print(f"{r['id']}\tthink_tokens={r['think_tokens']}\treflections={r['reflections']}\t"
                  f"tokens_per_reflection={r['tokens_per_reflection']:.1f}")
    print(f"written: {a.out}")
    print(f"T goes into training as reflection_threshold: {cal.threshold:.2f} in a recipe, or as the override "
          f"reflection_threshold={cal.threshold:.2f} (or reflection_calibration: {a.out})")
    return 0


# -- eval -----------------------------------------------------------------------------------------
def cmd_eval(a: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from rearl.eval.metrics import LEGEND, SUMMARY_COLUMNS, summary_rows
    from rearl.eval.run import EvalConfig, evaluate

    cfg = from_args(EvalConfig, a)
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


# -- measure --------------------------------------------------------------------------------------
def cmd_measure(a: argparse.Namespace) -> int:
    from rearl.eval.overthinking import MeasureConfig, markdown, measure

    cfg = from_args(MeasureConfig, a)
    res = measure(cfg, progress=not a.quiet)
    print("median [p10, p90] over correct traces; accuracy over all. Removable share: the share of the thinking "
          "that comes after the first correct answer (what a perfect cut would remove)")
    print(markdown(res))
    for path, f in res["files"].items():
        recs = f["records"]
        print(f"{os.path.basename(path)}: {sum(r['correct'] for r in recs)} of {len(recs)} traces correct")
    if cfg.out:
        print(f"written: {cfg.out}")
    return 0


# -- report ---------------------------------------------------------------------------------------
def cmd_report(a: argparse.Namespace) -> int:
    from rearl.eval.report import make_report

    labels = [x.strip() for x in a.labels.split(",")] if a.labels else None
    res = make_report(a.runs, a.out, reference=a.reference, labels=labels)
    with open(os.path.join(a.out, "report.md"), encoding="utf-8") as f:
        print(f.read())
    print("written: " + ", ".join(os.path.join(a.out, f) for f in ["report.md", "report.json", *res["plots"].values()]))
    return 0


# -- reflector (label | split | train | eval) -----------------------------------------------------------
def cmd_reflector_label(a: argparse.Namespace) -> int:
    from rearl.reflector.labels import LabelConfig, label_file, labels_summary_path

    cfg = from_args(LabelConfig, a)
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
    from rearl.reflector.labels import split_file

    info = split_file(a.labels, a.out, a.heldout, a.seed)
    _table("rearl reflector split (by problem)", [
        ("train traces", info["train"]["traces"]), ("train problems", info["train"]["problems"]),
        ("held-out traces", info["heldout"]["traces"]), ("held-out problems", info["heldout"]["problems"]),
    ])
    print(f"written: {os.path.join(a.out, 'train.jsonl')}, {os.path.join(a.out, 'heldout.jsonl')}, "
          f"{os.path.join(a.out, 'split.json')}")
    return 0


def cmd_reflector_train(a: argparse.Namespace) -> int:
    from dataclasses import fields

    from rearl.reflector.train import TrainConfig, load_train_config, train_reflector

    cfg = load_train_config(a.config, **{f.name: getattr(a, f.name) for f in fields(TrainConfig) if hasattr(a, f.name)})
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
    from rearl.reflector.evaluate import EvalConfig, evaluate_reflector

    cfg = from_args(EvalConfig, a)
    rep = evaluate_reflector(cfg, progress=not a.quiet)
    print(open(rep["paths"][0], encoding="utf-8").read())
    print("written: " + ", ".join(rep["paths"]))
    return 0


def _add_reflector(sub: Any) -> None:
    rf = sub.add_parser("reflector", help="the reflection model: teacher labels, SFT training, quality report")
    rsub = rf.add_subparsers(dest="reflector_command", metavar="ACTION")

    from rearl.reflector.evaluate import EvalConfig
    from rearl.reflector.labels import LabelConfig
    from rearl.reflector.train import TrainConfig

    lb = rsub.add_parser("label", help="teacher labels (oracle or LLM judge) and SFT examples for every trace")
    add_options(lb, LabelConfig)
    lb.add_argument("--quiet", action="store_true", help="no progress bar")
    lb.set_defaults(func=cmd_reflector_label)

    sp = rsub.add_parser("split", help="split labels into train / held-out by problem")
    sp.add_argument("--labels", required=True, help="teacher labels JSONL (rearl reflector label)")
    sp.add_argument("--out", required=True, help="directory for train.jsonl, heldout.jsonl, split.json")
    sp.add_argument("--heldout", type=float, default=0.25, help="fraction of problems held out")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random problem split (default 0)")
    sp.set_defaults(func=cmd_reflector_split)

    tr = rsub.add_parser("train", help="SFT (LoRA by default) on label files; saves a merged checkpoint")
    tr.add_argument("--config", help="YAML recipe (recipes/reflector/*.yaml); flags override it")
    add_options(tr, TrainConfig, only_given=True)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_reflector_train)

    ev = rsub.add_parser("eval", help="quality report against teacher labels on held-out traces")
    add_options(ev, EvalConfig)
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_reflector_eval)
    rf.set_defaults(func=lambda a: (rf.print_help(), 0)[1])


# -- models ---------------------------------------------------------------------------------------
def cmd_models_prepare(a: argparse.Namespace) -> int:
    from rearl.backends.embedded import prepare_default_model

    path = prepare_default_model(force=a.force, dtype=a.dtype)
    print(path)
    return 0


def cmd_models_path(a: argparse.Namespace) -> int:
    from rearl.backends.embedded import default_model_dir, is_prepared

    p = default_model_dir()
    print(p if is_prepared(p) else f"{p} (not prepared: run `rearl models prepare`)")
    return 0


# -- verify ---------------------------------------------------------------------------------------
def cmd_verify(a: argparse.Namespace) -> int:
    from rearl.core.verify import VerifierPool, check_completions

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
    from rearl.core.answers import EXTRACT_MODES
    from rearl.core.reflection import REGEX_MODES
    from rearl.eval.run import EvalConfig
    from rearl.offline.detect import DetectConfig
    from rearl.offline.revise import ReviseConfig
    from rearl.train.baselines import BaselineConfig

    p = argparse.ArgumentParser(prog="rearl", description="REA-RL: make reasoning models think less without thinking worse.")
    p.add_argument("--version", action="version", version=f"rearl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("detect", help="find where each trace already had its answer and how much thinking follows")
    add_options(d, DetectConfig)
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_detect)

    r = sub.add_parser("revise", help="complete detected cuts with a policy and compare with the originals")
    add_options(r, ReviseConfig)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_revise)

    dp = sub.add_parser("data", help="training data: filter problems by whether a model solves them")
    dsub = dp.add_subparsers(dest="data_command", required=True)
    from rearl.offline.filter import FilterConfig

    df = dsub.add_parser("filter", help="keep the problems a model answers correctly at least once in N samples "
                                        "(the authors' DeepScaleR filter: R1-7B, 4 samples)")
    add_options(df, FilterConfig)
    df.add_argument("--quiet", action="store_true", help="no progress bar")
    df.set_defaults(func=cmd_data_filter)

    t = sub.add_parser("train", help="GRPO / REA-RL training from a recipe (recipes/*.yaml)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    plain_help = t.format_help

    def with_recipe_keys() -> str:  # built on --help only: it imports TRL
        from rearl.train.config import recipe_keys_help

        t.epilog = recipe_keys_help()
        return plain_help()
    t.format_help = with_recipe_keys
    t.add_argument("--config", help="recipe YAML (flat keys: model, data and REARLConfig/GRPOConfig fields)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    t.add_argument("--dry-run", action="store_true",
                   help="check the recipe and overrides (names, types, settings that do not go together) and print the "
                        "resolved settings as YAML; loads no model, trains nothing")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="override any recipe key, e.g. max_steps=10")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("baseline", help="offline baselines from `rearl revise` outputs: sft | rpo")
    add_options(b, BaselineConfig)
    b.set_defaults(func=cmd_baseline)

    c = sub.add_parser("calibrate", help="reflection threshold T (tokens per reflection) from base-model responses")
    c.add_argument("--input", "--responses", dest="responses", required=True,
                   help="the base model's responses (JSONL; --responses is the old name)")
    c.add_argument("--tokenizer", required=True, help="the policy's tokenizer (path)")
    c.add_argument("--quantile", type=float, default=0.2, help="q: T is the (1-q) percentile (default 0.2 -> p80)")
    c.add_argument("--regex", choices=REGEX_MODES, default="authors",
                   help="reflection keyword matcher: authors (the paper's substring list) or word (whole words only) "
                        "(default: authors)")
    c.add_argument("--out", default="calibration.json", help="where to write the calibration JSON")
    c.add_argument("--show-responses", action="store_true", help="print the per-response distribution")
    _fields(c)
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser("eval", help="sample math benchmarks, score them at token budgets (docs/evaluation.md)")
    add_options(e, EvalConfig)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    from rearl.eval.overthinking import MeasureConfig

    ms = sub.add_parser("measure", help="how much traces overthink: paragraphs, thinking after the first correct "
                                        "answer, reflection density before/after it (docs/evaluation.md)")
    add_options(ms, MeasureConfig)
    ms.add_argument("--quiet", action="store_true", help="no progress bar")
    ms.set_defaults(func=cmd_measure)

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

    from rearl.testbed.__main__ import add_subcommands as _testbed

    tb = sub.add_parser("testbed", help="the CPU testbed: a toy overthinking LRM and the whole REA-RL story")
    _testbed(tb.add_subparsers(dest="testbed_command"))
    tb.set_defaults(func=lambda a: (tb.print_help(), 0)[1])

    v = sub.add_parser("verify", help="check one completion against a gold answer (exit 0 if correct)")
    v.add_argument("--gold", required=True, help="the gold answer, e.g. '\\frac{1}{2}'")
    v.add_argument("--completion", required=True, help="the model's completion (text)")
    v.add_argument("--extraction", "--mode", dest="mode", default="answer_part", choices=EXTRACT_MODES,
                   help="where the final answer is read: answer_part (the last box after </think>, the paper), "
                        "last_boxed_anywhere (the authors' code) or math_verify (--mode is the old name; default: "
                        "answer_part)")
    v.add_argument("--timeout", type=float, default=5.0, help="seconds for the equivalence check (default 5)")
    v.set_defaults(func=cmd_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from rearl.core.io import DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, FileNotFoundError, OSError) as e:
        print(f"rearl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
