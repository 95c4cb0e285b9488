"""A reflection model sized for the toy LRM: the toy's own weights, a tokenizer that also reads the prompt.

The paper's reflection model is about as large as its policy (7B next to 7B). The testbed's is the
toy LRM itself (same Llama architecture and weights, 0.8M parameters), fine-tuned by `rearl reflector
train` on the teacher's labels of the base responses, in the standard prompt and `[i]. Think|Result`
format (`rearl.reflector.prompt`). It starts from the policy's weights because telling a right answer
statement from a wrong one without the gold answer takes re-adding the columns, which the toy LRM
already does.

The toy tokenizer only knows the traces' words, so the reflector's tokenizer extends it: the same
WordPiece vocabulary with the same ids (a trace encodes to the same ids under both, tested), plus the
words of the reflection prompt, with `*[]().:` split off so `**[3].**` and `[3]. Result` are
pieces the model can read; the new rows of the embedding start at the mean of the old ones.
`rearl reflector train --base <this directory> --full` then trains it like any other base model, and
`rearl reflector eval` / `rearl detect --detector model` load the result unchanged.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rearl.reflector.prompt import INSTRUCTIONS, RESULT, THINK, target_text, user_message

# The reflector's chat turn: the user's message, then the reply (which the prompt pre-fills with `[1].`).
CHAT_TEMPLATE = (
    "{{- eos_token -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- 'User :\\n' + m['content'] + '\\n' -}}"
    "{%- elif m['role'] == 'assistant' -%}{{- 'Labels :\\n' + m['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Labels :\\n' -}}{%- endif -%}"
)
# split off wherever they are glued (the traces write them apart, so trace tokens are unchanged)
SPLIT = r"[\*\[\]\(\)\.:]"


def _prompt_corpus() -> list[str]:
    """Every fixed text of the reflection prompt, the template and the labels, for the vocabulary."""
    texts = [INSTRUCTIONS.format(n=n) for n in (1, 9, 40)]
    texts.append(user_message("q", ["p"] * 3))
    texts.append(target_text([THINK, RESULT, THINK]))
    texts.append("User :\nLabels :\n")
    return texts


def reflector_tokenizer(toy_tokenizer: Any) -> Any:
    """The toy tokenizer's vocabulary (same ids) + the reflection prompt's words, `*[]().:` split off."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rearl.testbed.toy_model import CONT, PLAIN_ADDED, SPECIALS

    old = toy_tokenizer.get_vocab()
    vocab = dict(sorted(old.items(), key=lambda kv: kv[1]))  # keeps every id, the added tokens' included
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError("the toy tokenizer's ids are not contiguous")
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(SPLIT), "isolated")])
    for text in _prompt_corpus():
        for line in text.split("\n"):
            for piece, _ in pre.pre_tokenize_str(line):
                if not piece.isdigit() and piece not in vocab:
                    vocab[piece] = len(vocab)
    tk = Tokenizer(models.WordPiece(vocab, unk_token=SPECIALS[0], continuing_subword_prefix=CONT,
                                    max_input_chars_per_word=64))
    tk.pre_tokenizer = pre
    tk.decoder = decoders.Sequence([
        decoders.WordPiece(prefix=CONT, cleanup=False), decoders.Fuse(),
        decoders.Replace(" \n", "\n"), decoders.Replace("\n ", "\n"),
        decoders.Replace(SPECIALS[2] + " ", SPECIALS[2]), decoders.Replace(" " + SPECIALS[2], SPECIALS[2]),
        # the label lines read back as written: "[ 3 ] . Result" -> "[3]. Result"
        decoders.Replace("* *", "**"), decoders.Replace("[ ", "["), decoders.Replace(" ]", "]"),
        decoders.Replace("] .", "]."), decoders.Replace(" :", ":"),
    ])
    tk.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIALS])
    tk.add_tokens([AddedToken(t, normalized=False) for t in PLAIN_ADDED])  # already in the vocabulary: same ids
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token=toy_tokenizer.eos_token, pad_token=toy_tokenizer.pad_token,
        unk_token=toy_tokenizer.unk_token, clean_up_tokenization_spaces=False, padding_side="left",
        model_max_length=toy_tokenizer.model_max_length,
    )
    tok.chat_template = CHAT_TEMPLATE
    for t in PLAIN_ADDED + SPECIALS:
        if tok.convert_tokens_to_ids(t) != old[t]:
            raise RuntimeError(f"token {t!r} moved from id {old[t]} to {tok.convert_tokens_to_ids(t)}")
    return tok


def init_reflector(toy_dir: str | Path, out: str | Path, max_positions: int | None = None) -> Path:
    """Write the reflector's starting point to `out`: the toy LRM's weights with the extended vocabulary.

    `max_positions`: a longer context than the toy's (RoPE extends without new weights); by default
    the toy's, which holds a 640-token trace with its prompt and labels.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.core.io import write_json_atomic

    toy_tok = AutoTokenizer.from_pretrained(str(toy_dir))
    tok = reflector_tokenizer(toy_tok)
    model = AutoModelForCausalLM.from_pretrained(str(toy_dir), dtype=torch.float32)
    old_rows = model.get_input_embeddings().weight.shape[0]
    # new rows = the old rows' mean, exactly: transformers' mean_resizing draws them from a normal around
    # it, unseeded, and two story runs then trained different reflectors (measured: REA-RL's policy
    # differed between two runs whose every other stage was bitwise the same)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        embs = {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e is not None}
        for e in embs.values():
            e.weight[old_rows:] = e.weight[:old_rows].mean(0)
    if max_positions:
        model.config.max_position_embeddings = int(max_positions)
        tok.model_max_length = int(max_positions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    write_json_atomic(out / "toy_reflector_init.json", {
        "toy_lrm": str(toy_dir), "vocab_toy": old_rows, "vocab": len(tok),
        "new_tokens": [t for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if i >= old_rows],
        "parameters": sum(p.numel() for p in model.parameters()),
        "max_positions": model.config.max_position_embeddings,
    })
    return out


# -- the story's stage: label, split, train, evaluate ------------------------------------------------------
def train_toy_reflector(toy_dir: str, traces: Path, out: Path, *, steps: int, learning_rate: float, batch_size: int = 4,
                        seed: int = 0, threads: int | None = None, heldout_fraction: float = 0.25,
                        progress: bool = True) -> dict[str, Any]:
    """Oracle labels (two-step, every accepted paragraph) on the base responses -> split by problem ->
    full fine-tuning of the toy LRM as a reflector -> its quality report next to the naive baselines.

    Writes `out/eval.json` last (the stage's marker) with the report table, a by-level table, the
    learning curve (`out/learning_curve.png`) and the scoring time per trace.
    """
    from rearl.core.io import write_json_atomic, write_text_atomic
    from rearl.reflector.evaluate import EvalConfig as REvalConfig
    from rearl.reflector.evaluate import evaluate_reflector, markdown_table
    from rearl.reflector.labels import LabelConfig, label_file, read_labels, split_file, trace_key
    from rearl.reflector.train import load_train_config, read_meta, train_reflector

    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.jsonl"
    label_file(LabelConfig(inputs=[str(traces.resolve())], out=str(labels), tokenizer=toy_dir, teacher="oracle"),
               progress=progress)  # absolute: label records point back at their traces file
    split = split_file(str(labels), str(out / "split"), heldout_fraction=heldout_fraction, seed=seed)
    init = out / "init"
    if not (init / "config.json").exists():
        init_reflector(toy_dir, init)
    # Traces without a Result stay in (the paper keeps only traces with one): on the toy's hard levels a
    # first pass is often wrong, and a reflector that never saw an all-Think trace calls every stated
    # number a Result.
    tcfg = load_train_config(None, data=[str(out / "split" / "train.jsonl")], out=str(out / "model"), base=str(init),
                             lora=False, max_steps=steps, learning_rate=learning_rate, lr_scheduler_type="cosine",
                             warmup_ratio=0.05, per_device_train_batch_size=batch_size, gradient_accumulation_steps=1,
                             logging_steps=max(1, min(10, steps // 10)), save_steps=max(50, steps // 2), max_length=1024,
                             num_threads=threads,
                             require_result=False, seed=seed)
    train_reflector(tcfg, progress=progress)
    rep = evaluate_reflector(REvalConfig(model=str(out / "model"), labels=str(out / "split" / "heldout.jsonl"),
                                         out=str(out / "eval_report"), batch_size=4, num_threads=threads),
                             progress=progress)
    by_level = quality_by_level(rep, {trace_key(str(traces), i): lv for i, lv in _levels(traces).items()})
    model_row = next(m for m in rep["details"] if m.startswith("trained model"))
    held = {r["key"]: r for r in read_labels(str(out / "split" / "heldout.jsonl"))}
    statements = right_and_wrong(rep, held, model_row)
    secs = [o["seconds"] for o in rep["details"][model_row] if o is not None and "seconds" in o]
    meta = read_meta(str(out / "model"))
    curve = _learning_curve(out / "model" / "train_log.json", out / "learning_curve.png")
    result = {"table": rep["table"], "traces": rep["traces"], "teacher": rep["teacher"], "by_level": by_level,
              "statements": statements,
              "split": {k: {kk: vv for kk, vv in v.items() if kk != "keys"} if isinstance(v, dict) else v
                        for k, v in split.items()}, "score_seconds_per_trace": statistics.median_high(secs) if secs else None,
              "train": {k: meta.get(k) for k in ("steps", "train_loss", "examples", "examples_with_result", "seconds",
                                                 "train_tokens")},
              "learning_curve": curve, "init": json.loads((init / "toy_reflector_init.json").read_text())}
    md = markdown_table(rep) + "\n" + by_level_markdown(by_level)
    if statements:
        r, w = statements["right"], statements["wrong"]
        md += (f"\nRight from wrong, without the gold answer: of the held-out paragraphs that state the right answer "
               f"the reflector calls {r['called_result']} of {r['paragraphs']} Result ({_pct(r['rate'])}); of those that "
               f"state a wrong one (a slipped first pass, a miscounted re-check), {w['called_result']} of "
               f"{w['paragraphs']} ({_pct(w['rate'])}).\n")
    md += (f"\nTrained on {result['train']['examples']} base responses ({result['train']['examples_with_result']} with a "
           f"Result) for {result['train']['steps']} steps ({result['train']['seconds']} s), final loss "
           f"{_last_loss(curve)}; scoring one trace takes {_fmt_s(result['score_seconds_per_trace'])} (median, forward "
           "mode, one thread).\n\n![learning curve](../reflector_toy/learning_curve.png)\n")
    write_text_atomic(out / "eval.md", md)
    write_json_atomic(out / "eval.json", result)
    return result


def right_and_wrong(report: dict[str, Any], records: dict[str, dict[str, Any]], method: str) -> dict[str, Any]:
    """How often `method` calls Result a paragraph that states the right answer vs one that states a wrong one.

    The toy's statements are parsed exactly (`traces.answer_statements`, the paragraph's last one). A
    wrong statement (a slipped first pass, a miscounted re-check) differs from a right one only in its
    digits: telling them apart without the gold answer takes re-adding the columns.
    """
    from rearl.testbed.traces import answer_statements

    outs = report["details"].get(method)
    if outs is None:
        return {}
    counts = {"right": [0, 0], "wrong": [0, 0]}  # [called Result, paragraphs]
    for t, o in zip(report["per_trace"], outs):
        rec = records.get(t["key"])
        if rec is None or o is None or o.get("p_result") is None:
            continue
        for text, p in zip(rec["paragraphs"], o["p_result"]):
            st = answer_statements(text)
            if not st:
                continue
            c = counts["right" if str(st[-1].value) == str(rec["answer"]) else "wrong"]
            c[0] += p >= 0.5
            c[1] += 1
    return {k: {"paragraphs": n, "called_result": r, "rate": 100.0 * r / n if n else None}
            for k, (r, n) in counts.items()}


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f} ms"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}%"


def _last_loss(curve: list[list[float]]) -> str:
    return f"{curve[-1][1]:.3f}" if curve else "-"


def _levels(traces: Path) -> dict[str, Any]:
    from rearl.core.io import read_jsonl

    return {str(r["id"]): r.get("level") for _, r in read_jsonl(traces)}


def quality_by_level(report: dict[str, Any], level_of: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Normal-cut agreement with the teacher (exact, within +-1) per method, on easy and hard levels."""
    from rearl.testbed.tasks import EASY

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in report["per_trace"]:
        lv = level_of.get(t["key"])
        if lv is None:
            continue
        group = "easy" if int(lv) in EASY else "hard"
        for method, cut in t["cuts"].items():
            if cut is None:
                continue
            c = out.setdefault(method, {}).setdefault(group, {"n": 0, "exact": 0, "within1": 0})
            c["n"] += 1
            c["exact"] += cut == t["teacher_cut"]
            c["within1"] += abs(cut - t["teacher_cut"]) <= 1
    for groups in out.values():
        for c in groups.values():
            c["exact"] = 100.0 * c["exact"] / c["n"]
            c["within1"] = 100.0 * c["within1"] / c["n"]
    return out


def by_level_markdown(by_level: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = ["Normal cut = teacher, by difficulty (exact % / within ±1 %; the hard levels are where first passes "
            "go wrong and a reflector must re-add to tell a right answer from a wrong one):", "",
            "| method | easy | hard |", "|---|---|---|"]
    for method, g in by_level.items():
        cells = [f"{g[k]['exact']:.0f} / {g[k]['within1']:.0f} (n={g[k]['n']})" if k in g else "-" for k in ("easy", "hard")]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _learning_curve(log: Path, png: Path) -> list[list[float]]:
    """(step, loss) from the trainer's log, plotted (a run too short to log a loss says so on the plot)."""
    from rearl.eval.report import _pyplot

    curve = [[h["step"], h["loss"]] for h in json.loads(log.read_text()) if "loss" in h and "step" in h] \
        if log.exists() else []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if curve:
        ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("label loss (completion tokens)")
    ax.set_title("toy reflector: fine-tuning")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return curve
