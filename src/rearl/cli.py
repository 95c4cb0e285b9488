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
        limit=a.limit, model=a.model, mode=a.mode, reflection_tokenizer=a.reflection_tokenizer,
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

    c = sub.add_parser("calibrate", help="reflection threshold T (tokens per reflection) from base-model responses")
    c.add_argument("--responses", required=True, help="responses JSONL")
    c.add_argument("--tokenizer", required=True, help="the policy's tokenizer (path)")
    c.add_argument("--quantile", type=float, default=0.2, help="q: T is the (1-q) percentile (default 0.2 -> p80)")
    c.add_argument("--regex", choices=REGEX_MODES, default="authors")
    c.add_argument("--out", default="calibration.json", help="where to write the calibration JSON")
    c.add_argument("--show-responses", action="store_true", help="print the per-response distribution")
    _fields(c)
    c.set_defaults(func=cmd_calibrate)

    m = sub.add_parser("models", help="the embedded default model (SmolLM2-135M-Instruct)")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    mp = msub.add_parser("prepare", help="convert the embedded GGUF into a cached HF checkpoint (once)")
    mp.add_argument("--force", action="store_true", help="rebuild even if cached")
    mp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    mp.set_defaults(func=cmd_models_prepare)
    mpath = msub.add_parser("path", help="print where the prepared checkpoint lives")
    mpath.set_defaults(func=cmd_models_path)
    m.set_defaults(func=lambda a: (m.print_help(), 0)[1])

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
