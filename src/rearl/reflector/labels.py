"""Teacher labels for the reflection model and its SFT examples (docs/reflection-model.md).

Two teachers say which paragraphs of a trace's thinking already state the answer ("Result"):

* ``oracle``: free. A paragraph is Result when it holds an answer statement that the verifier
  accepts against the gold answer (`rearl.core.detectors.oracle_detect`).
* ``judge``: an LLM behind any OpenAI-compatible ``/v1/chat/completions`` endpoint, in the two
  steps of docs/reflection-model.md: coarse labels per chunk of ~1024 tokens (Reasoning / Right Result / Wrong
  Result, numbering restarting at [1] in every chunk), then a Yes/No re-check of every candidate
  paragraph alone (the Right Result ones plus, always, the last paragraph). Only "Yes" is kept.
  A reply that cannot be parsed drops its chunk (or rejects its candidate) and is counted; it never
  stops the run. A transport failure leaves the trace unwritten, so a rerun retries it.

Output (`label_file`): one JSONL record per trace with the accepted Result paragraph indices and
SFT examples in prompt-completion form: prompt = the user turn of the reflection prompt
(docs/method.md#the-reflection-model, `rearl.reflector.prompt.user_message`), completion = `[1]. Think\\n[2]. Result ...`, the
exact lines the model is pre-filled into at inference. Long traces can be cut into windows of
consecutive paragraphs (numbering restarting at [1], like the teacher's chunks); the same windows
are used when scoring with a window-trained model (`rearl.reflector.window.WindowedScorer`).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rearl.core.io import (
    DataError,
    ResumableJsonl,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)
from rearl.options import option
from rearl.reflector.prompt import RESULT, THINK, target_text, user_message

TEACHERS = ("oracle", "judge")
RESULT_RULES = ("every", "first")

# -- grouping paragraphs into chunks / windows --------------------------------------------------------


def group_paragraphs(n_tokens: Sequence[int], max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) groups whose token sum stays within `max_tokens`.

    A paragraph larger than the budget forms a group of its own rather than being split: the
    teacher and the model label whole paragraphs.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    groups: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, n in enumerate(n_tokens):
        if i > start and total + n > max_tokens:
            groups.append((start, i))
            start, total = i, 0
        total += n
    if start < len(n_tokens):
        groups.append((start, len(n_tokens)))
    return groups


def paragraph_token_counts(tokenizer: Any, paragraphs: Sequence[str]) -> list[int]:
    """Token count of each paragraph text (the unit of chunk and window budgets)."""
    if not paragraphs:
        return []
    return [len(x) for x in tokenizer(list(paragraphs), add_special_tokens=False)["input_ids"]]


# -- judge prompts (our own wording of docs/reflection-model.md's structure) -----------------------------------------
COARSE_WITH_GOLD = (
    "Below is a math question, its gold answer, and an excerpt of a model's reasoning split into {n} "
    "numbered parts.\n\n"
    "**Question:** {problem}\n\n**Gold Answer:** {gold}\n\n**Response:**\n\n{parts}\n\n"
    "Give every part one label:\n"
    "- Reasoning: the part works toward the answer but does not state one.\n"
    "- Right Result: the part states an answer to the question that agrees with the gold answer "
    "(this may happen before the end of the response).\n"
    "- Wrong Result: the part states an answer to the question that disagrees with the gold answer.\n\n"
    "Cover every part, in order, in exactly this form:\n"
    "[1]. Analysis: <one short sentence>\nLabel: <Reasoning | Right Result | Wrong Result>\n"
    "[2]. Analysis: <one short sentence>\nLabel: <Reasoning | Right Result | Wrong Result>\n...\n"
    "[{n}]. Analysis: <one short sentence>\nLabel: <Reasoning | Right Result | Wrong Result>"
)
COARSE_NO_GOLD = (
    "Below is a math question and an excerpt of a model's reasoning split into {n} numbered parts.\n\n"
    "**Question:** {problem}\n\n**Response:**\n\n{parts}\n\n"
    "Give every part one label:\n"
    "- Reasoning: the part works toward the answer but does not state one.\n"
    "- Result: the part states the model's answer to the question (this may happen before the end "
    "of the response).\n\n"
    "Cover every part, in order, in exactly this form:\n"
    "[1]. Analysis: <one short sentence>\nLabel: <Reasoning | Result>\n"
    "[2]. Analysis: <one short sentence>\nLabel: <Reasoning | Result>\n...\n"
    "[{n}]. Analysis: <one short sentence>\nLabel: <Reasoning | Result>"
)
CHECK_WITH_GOLD = (
    "**Question:** {problem}\n\n**Gold Answer:** {gold}\n\n**Response:** {paragraph}\n\n"
    "The response above is one excerpt of a longer solution written by a model; what came before it "
    "is not shown. Has the model stated the correct answer by the end of this excerpt? An answer "
    "equivalent to the gold answer counts as correct whatever its form (fraction or decimal, LaTeX "
    "or plain text, with or without units).\n\n"
    "Reply in exactly this form:\nReasoning: <think it through step by step>\nAnswer: <Yes or No>"
)
CHECK_NO_GOLD = (
    "**Question:** {problem}\n\n**Response:** {paragraph}\n\n"
    "The response above is one excerpt of a longer solution written by a model; what came before it "
    "is not shown. Has the model already given its answer to the question by the end of this "
    "excerpt?\n\n"
    "Reply in exactly this form:\nReasoning: <think it through step by step>\nAnswer: <Yes or No>"
)


def coarse_prompt(problem: str, parts: Sequence[str], gold: str | None) -> str:
    body = "\n\n".join(f"**[{i}].** {p}" for i, p in enumerate(parts, 1))
    if gold is None:
        return COARSE_NO_GOLD.format(n=len(parts), problem=problem, parts=body)
    return COARSE_WITH_GOLD.format(n=len(parts), problem=problem, gold=gold, parts=body)


def check_prompt(problem: str, paragraph: str, gold: str | None) -> str:
    if gold is None:
        return CHECK_NO_GOLD.format(problem=problem, paragraph=paragraph)
    return CHECK_WITH_GOLD.format(problem=problem, gold=gold, paragraph=paragraph)


# -- reply parsing ------------------------------------------------------------------------------
# A part header at the start of a line: `[3].`, `**[3].**`, `[3]`, `3.` is not accepted (too
# common inside explanations).
_PART_HEAD = re.compile(r"^[ \t>*_#]*\[(\d+)\]\.?[*_]*", re.M)
_LABEL = re.compile(r"(?im)^[ \t>*_\-]*label[*_]*\s*:[*_\s]*([^\n]*)")
_ANSWER = re.compile(r"(?i)answer[*_]*\s*:[*_\s]*(yes|no)\b")
CANON_LABELS = {"reasoning": "Reasoning", "right result": "Right Result", "wrong result": "Wrong Result",
                "result": "Result"}


@dataclass
class CoarseParse:
    labels: list[str] | None  # one canonical label per part, or None when the chunk is dropped
    error: str | None = None


def _canon_label(raw: str) -> str | None:
    s = re.sub(r"[*_`\"'.\[\]<>]", " ", raw).strip().lower()
    s = re.sub(r"\s+", " ", s)
    return CANON_LABELS.get(s)


def parse_coarse_reply(reply: str, n: int) -> CoarseParse:
    """Labels for parts 1..n from a step-1 reply, or the reason the chunk must be dropped.

    The chunk is kept only if every part has a header and a recognised `Label:` line: a partial
    reply (cut off, or parts skipped) would shift labels onto the wrong paragraphs.
    """
    heads = list(_PART_HEAD.finditer(reply or ""))
    found: dict[int, str] = {}
    for k, m in enumerate(heads):
        i = int(m.group(1))
        piece = reply[m.end() : heads[k + 1].start() if k + 1 < len(heads) else len(reply)]
        if i in found or not 1 <= i <= n:
            continue  # a repeated or out-of-range number: keep the first in-range occurrence
        lab = _LABEL.search(piece)
        if lab is None:
            return CoarseParse(None, f"part [{i}] has no 'Label:' line")
        canon = _canon_label(lab.group(1))
        if canon is None:
            return CoarseParse(None, f"part [{i}] has an unknown label {lab.group(1).strip()[:40]!r}")
        found[i] = canon
    missing = [i for i in range(1, n + 1) if i not in found]
    if missing:
        return CoarseParse(None, f"partial reply: {len(missing)} of {n} parts missing (first [{missing[0]}])")
    return CoarseParse([found[i] for i in range(1, n + 1)])


def parse_check_reply(reply: str) -> bool | None:
    """The step-2 verdict (the last `Answer: Yes/No`), or None when there is none."""
    hits = _ANSWER.findall(reply or "")
    return None if not hits else hits[-1].lower() == "yes"


def is_candidate(label: str, with_gold: bool) -> bool:
    return label == "Right Result" or (not with_gold and label == "Result")


# -- the judge client ---------------------------------------------------------------------------
class ChatJudge:
    """A chat model behind an OpenAI-compatible `/v1/chat/completions` endpoint (temperature 0)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 300.0,
                 retries: int = 3, coarse_max_tokens: int = 8192, check_max_tokens: int = 2048):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.model, self.api_key, self.timeout, self.retries = model, api_key, timeout, retries
        self.coarse_max_tokens, self.check_max_tokens = coarse_max_tokens, check_max_tokens

    def ask(self, prompt: str, max_tokens: int) -> str:
        from rearl.backends.server import ServerError, post_json

        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                   "max_tokens": max_tokens}
        r = post_json(f"{self.base_url}/v1/chat/completions", payload, self.timeout, self.retries, api_key=self.api_key)
        try:
            content = r["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.base_url}: reply has no choices[0].message.content: {str(r)[:200]}") from None
        return content or ""


@dataclass
class JudgeOutcome:
    result_paragraphs: list[int]
    candidates: list[int]
    coarse: list[str | None]  # step-1 label per paragraph (None where its chunk was dropped)
    chunks: int = 0
    malformed_chunks: int = 0
    malformed_checks: int = 0
    notes: list[str] = field(default_factory=list)


def judge_label(judge: Any, problem: str, paragraphs: Sequence[str], n_tokens: Sequence[int], gold: str | None,
                chunk_tokens: int = 1024, concurrency: int = 4) -> JudgeOutcome:
    """The two-step labelling of one trace. `judge.ask(prompt, max_tokens) -> str`.

    Transport errors propagate (the caller leaves the trace for a rerun); malformed replies are
    counted in the outcome.
    """
    n = len(paragraphs)
    if n == 0:
        return JudgeOutcome([], [], [])
    with_gold = gold is not None
    chunks = group_paragraphs(n_tokens, chunk_tokens)
    coarse: list[str | None] = [None] * n
    out = JudgeOutcome([], [], coarse, chunks=len(chunks))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex:
        replies = list(ex.map(lambda c: judge.ask(coarse_prompt(problem, paragraphs[c[0]:c[1]], gold),
                                                  getattr(judge, "coarse_max_tokens", 8192)), chunks))
        for (a, b), reply in zip(chunks, replies):
            parsed = parse_coarse_reply(reply, b - a)
            if parsed.labels is None:
                out.malformed_chunks += 1
                out.notes.append(f"chunk [{a}, {b}): {parsed.error}")
                continue
            coarse[a:b] = parsed.labels
        # the last paragraph is always re-checked: the trace's final answer usually sits there
        cands = sorted({i for i, lab in enumerate(coarse) if lab and is_candidate(lab, with_gold)} | {n - 1})
        verdicts = list(ex.map(lambda i: judge.ask(check_prompt(problem, paragraphs[i], gold),
                                                   getattr(judge, "check_max_tokens", 2048)), cands))
    out.candidates = cands
    for i, reply in zip(cands, verdicts):
        v = parse_check_reply(reply)
        if v is None:
            out.malformed_checks += 1
            out.notes.append(f"check of paragraph {i}: no 'Answer: Yes/No'")
        elif v:
            out.result_paragraphs.append(i)
    return out


# -- SFT examples -------------------------------------------------------------------------------
def sft_example(problem: str, paragraphs: Sequence[str], result: set[int], start: int = 0) -> dict[str, Any]:
    """One prompt-completion example (conversational form) for paragraphs[start:start+len]."""
    labels = [RESULT if start + i in result else THINK for i in range(len(paragraphs))]
    return {
        "prompt": [{"role": "user", "content": user_message(problem, paragraphs)}],
        "completion": [{"role": "assistant", "content": target_text(labels)}],
        "first_paragraph": start,
        "n_paragraphs": len(paragraphs),
        "n_result": labels.count(RESULT),
    }


def sft_examples(problem: str, paragraphs: Sequence[str], result_paragraphs: Sequence[int],
                 n_tokens: Sequence[int] | None = None, window_tokens: int | None = None) -> list[dict[str, Any]]:
    """The whole trace as one example, or windows of at most `window_tokens` paragraph tokens."""
    result = set(result_paragraphs)
    if not paragraphs:
        return []
    if window_tokens is None:
        return [sft_example(problem, paragraphs, result)]
    if n_tokens is None or len(n_tokens) != len(paragraphs):
        raise ValueError("windowed examples need one token count per paragraph")
    return [sft_example(problem, paragraphs[a:b], result, a) for a, b in group_paragraphs(n_tokens, window_tokens)]


def oracle_check(paragraphs: Sequence[str], candidates: Sequence[int], gold: str, pool: Any = None) -> list[int]:
    """The oracle's second step (docs/reflection-model.md#labels): every candidate re-read alone. A
    paragraph whose last explicit answer statement (a box, "the answer is N") is a number the verifier
    rejects concludes a wrong answer, whatever right number it mentioned on the way ("1309 does not
    match 1399 , so the first pass was wrong . The correct answer is 1308 ."): not a Result. The
    others keep the first step's verdict (the paper's judge, asked whether the correct answer has been
    given by the end of the excerpt, would say yes)."""
    from rearl.core.detectors import correct_mentions, stated_answers

    keep = []
    for i in candidates:
        stated = [m for m in stated_answers(paragraphs[i]) if _NUMBERLIKE.match(m.answer)]
        if stated and not correct_mentions(stated[-1:], gold, pool):
            continue
        keep.append(i)
    return keep


_NUMBERLIKE = re.compile(r"^[-+\d.,/\s()]*\d[-+\d.,/\s()]*$")


# -- labelling a trace file -------------------------------------------------------------------------
@dataclass
class LabelConfig:
    """Options of `rearl reflector label` (and `label_file`)."""

    inputs: list[str] = option(help="traces JSONL (repeat for several files)", flag="--input")
    out: str = option(help="labels JSONL, one record per trace (resumable)")
    tokenizer: str = option(help="the policy's tokenizer (paragraph splitting, token budgets)")
    teacher: str = option("oracle", "oracle: the gold answer and the verifier; judge: an LLM behind a server",
                          choices=TEACHERS)
    judge_url: str | None = option(None, "OpenAI-compatible server of the judge (.../v1/chat/completions)")
    judge_model: str | None = option(None, "model name to ask for, e.g. Qwen/Qwen2.5-32B-Instruct")
    api_key_env: str | None = option(None, "environment variable that holds the judge's API key")
    use_gold: bool = option(True, "judge without the gold answer", flag="--no-gold")
    chunk_tokens: int = option(1024, "judge step 1: paragraphs per request, in tokens")
    window_tokens: int | None = option(
        None, "SFT examples: windows of paragraphs within this many tokens (default: the whole trace)")
    max_think_tokens: int | None = option(None, "truncate the thinking before splitting")
    concurrency: int = option(4, "judge requests in flight")
    timeout: float = option(300.0, "judge request timeout (s)")
    retries: int = option(3, "judge retries per request")
    problem_field: str | None = option(None, "problem/question field (auto: problem, question, prompt)")
    answer_field: str | None = option(None, "gold answer field (auto: answer, gold_answer, gt_answer, gold, final_answer)")
    response_field: str | None = option(
        None, "response field (auto: response, completion, output, generated_responses, solution, thinking)")
    limit: int | None = option(None, "only the first N traces of each file")
    results: str = option("every", "which accepted paragraphs are labelled Result: every one (the paper's targets) "
                          "or the first only", choices=RESULT_RULES)
    oracle_check: bool = option(True, "oracle: skip the second step (re-reading each candidate paragraph alone)",
                                flag="--no-oracle-check")
    force: bool = option(False, "start --out fresh when it holds labels of other traces or settings (default: refuse)")


def trace_key(input_path: str, trace_id: str) -> str:
    """Ids are only unique within a file; records are keyed by file name and id."""
    return f"{Path(input_path).name}:{trace_id}"


def _load_all(cfg_inputs: Sequence[str], problem_field, answer_field, response_field, limit) -> list[tuple[str, Any]]:
    from rearl.core.traces import load_traces

    out: list[tuple[str, Any]] = []
    seen: dict[str, str] = {}
    for path in cfg_inputs:
        for t in load_traces(path, problem_field, answer_field, response_field, limit):
            k = trace_key(path, t.id)
            if k in seen:
                raise DataError(f"{t.source}: trace id {t.id!r} repeats {seen[k]}")
            seen[k] = t.source
            out.append((path, t))
    return out


def label_file(cfg: LabelConfig, progress: bool = True, judge: Any = None) -> dict[str, Any]:
    """Label every trace of `cfg.inputs` into `cfg.out` (resumable) and return the summary.

    `judge` may be passed (anything with `.ask(prompt, max_tokens)`) instead of a URL.
    """
    import os

    from transformers import AutoTokenizer

    from rearl.backends.server import ServerError
    from rearl.core.detectors import answer_mentions, correct_mentions, oracle_detect
    from rearl.core.text import ThinkTags, segment
    from rearl.core.verify import default_pool

    if cfg.teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {cfg.teacher!r}; choose one of {TEACHERS}")
    if cfg.teacher == "judge" and judge is None:
        if not cfg.judge_url or not cfg.judge_model:
            raise ValueError("the judge teacher needs --judge-url (an OpenAI-compatible server) and --judge-model")
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_key_env and not key:
            raise ValueError(f"environment variable {cfg.api_key_env} is not set")
        judge = ChatJudge(cfg.judge_url, cfg.judge_model, key, cfg.timeout, cfg.retries)
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    tags = ThinkTags.from_tokenizer(tok)
    traces = _load_all(cfg.inputs, cfg.problem_field, cfg.answer_field, cfg.response_field, cfg.limit)
    needs_gold = cfg.teacher == "oracle" or cfg.use_gold
    for path, t in traces:
        if needs_gold and t.answer is None:
            raise DataError(f"{t.source}: no gold answer (the {cfg.teacher} teacher needs one here; set --answer-field"
                            + (" or use --no-gold" if cfg.teacher == "judge" else "") + ")")
    pool = default_pool()
    teacher_name = "oracle" if cfg.teacher == "oracle" else f"judge:{getattr(judge, 'model', 'custom')}" + (
        "" if cfg.use_gold else ":no-gold")
    failed: list[str] = []
    from rearl.core.io import file_fingerprint, refuse_same_path, resume_or_refuse

    refuse_same_path(cfg.out, cfg.inputs)
    resume_or_refuse(cfg.out, {"inputs": [file_fingerprint(p) for p in cfg.inputs],
                               **{k: getattr(cfg, k) for k in ("tokenizer", "teacher", "judge_model", "use_gold",
                                                               "chunk_tokens", "window_tokens", "max_think_tokens",
                                                               "problem_field", "answer_field", "response_field",
                                                               "results", "oracle_check")}},
                     cfg.force, extra=[labels_summary_path(cfg.out)])
    with ResumableJsonl(cfg.out, key="key") as out:
        todo = [(p, t) for p, t in traces if out.pending(trace_key(p, t.id))]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(traces), initial=len(traces) - len(todo), desc=f"label ({cfg.teacher})", unit="trace")
        for path, t in todo:
            t0 = time.perf_counter()
            seg = segment(tok, text=t.response, tags=tags, max_think_tokens=cfg.max_think_tokens)
            paras = [p.text for p in seg.paragraphs]
            counts = paragraph_token_counts(tok, paras)
            rec: dict[str, Any] = {
                "key": trace_key(path, t.id), "id": t.id, "input": path, "source": t.source,
                "tokenizer": cfg.tokenizer, "max_think_tokens": cfg.max_think_tokens,
                "problem": t.problem, "answer": t.answer, "teacher": teacher_name,
                "n_paragraphs": len(paras), "think_tokens": seg.think_tokens,
                "paragraphs": paras, "paragraph_tokens": counts,
            }
            if cfg.teacher == "oracle":
                ok = correct_mentions(answer_mentions(seg.text, seg.split.think_start, seg.split.think_end), t.answer, pool)
                cands = oracle_detect(seg, t.answer, mentions_ok=ok).result_paragraphs if paras else []
                rec["candidates"] = cands
                rec["result_paragraphs"] = oracle_check(paras, cands, t.answer, pool) if cfg.oracle_check else cands
            else:
                try:
                    jo = judge_label(judge, t.problem, paras, counts, t.answer if cfg.use_gold else None,
                                     cfg.chunk_tokens, cfg.concurrency)
                except ServerError as e:
                    failed.append(f"{t.source}: {e}")
                    if bar is not None:
                        bar.write(f"label: {t.source}: judge request failed, left for a rerun: {e}")
                    continue
                rec.update(result_paragraphs=jo.result_paragraphs, candidates=jo.candidates,
                           coarse_labels=jo.coarse, chunks=jo.chunks, malformed_chunks=jo.malformed_chunks,
                           malformed_checks=jo.malformed_checks, notes=jo.notes[:20])
            if cfg.results == "first":
                rec["result_paragraphs"] = rec["result_paragraphs"][:1]
            rec["results"] = cfg.results
            rec["examples"] = sft_examples(t.problem, paras, rec["result_paragraphs"], counts, cfg.window_tokens)
            rec["window_tokens"] = cfg.window_tokens
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            out.write(rec)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        keys = {trace_key(p, t.id) for p, t in traces}
        records = [r for r in out.records() if r["key"] in keys]
    summary = summarize_labels(records)
    summary.update(inputs=list(cfg.inputs), tokenizer=cfg.tokenizer, teacher=teacher_name,
                   window_tokens=cfg.window_tokens, max_think_tokens=cfg.max_think_tokens,
                   failed_traces=len(failed), failures=failed[:20])
    write_json_atomic(labels_summary_path(cfg.out), summary)
    return summary


def summarize_labels(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    with_result = [r for r in records if r.get("result_paragraphs")]
    ex = [e for r in records for e in r.get("examples", [])]
    return {
        "traces": len(records),
        "traces_with_result": len(with_result),
        "paragraphs": sum(r["n_paragraphs"] for r in records),
        "result_paragraphs": sum(len(r.get("result_paragraphs", [])) for r in records),
        "examples": len(ex),
        "examples_with_result": sum(1 for e in ex if e["n_result"]),
        "chunks": sum(r.get("chunks", 0) for r in records),
        "malformed_chunks": sum(r.get("malformed_chunks", 0) for r in records),
        "malformed_checks": sum(r.get("malformed_checks", 0) for r in records),
    }


def labels_summary_path(out: str) -> str:
    return out[: -len(".jsonl")] + ".summary.json" if out.endswith(".jsonl") else out + ".summary.json"


def read_labels(path: str) -> list[dict[str, Any]]:
    """Label records (the last one per key wins), checked for the fields training and eval need."""
    recs: dict[str, dict[str, Any]] = {}
    for lineno, r in read_jsonl(path):
        for f in ("key", "problem", "n_paragraphs", "result_paragraphs"):
            if f not in r:
                raise DataError(f"{path}:{lineno}: label record has no {f!r} field")
        bad = [i for i in r["result_paragraphs"] if not isinstance(i, int) or not 0 <= i < r["n_paragraphs"]]
        if bad:
            raise DataError(f"{path}:{lineno}: result paragraph {bad[0]!r} outside 0..{r['n_paragraphs'] - 1}")
        recs[str(r["key"])] = r
    return list(recs.values())


# -- problem-level split ------------------------------------------------------------------------
def problem_key(problem: str) -> str:
    return hashlib.sha1(re.sub(r"\s+", " ", problem).strip().lower().encode("utf-8")).hexdigest()[:16]


def split_by_problem(records: Sequence[dict[str, Any]], heldout_fraction: float, seed: int = 0,
                     key: Callable[[dict[str, Any]], str] = lambda r: problem_key(r["problem"])
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): every trace of a problem lands on the same side."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout fraction must be in (0, 1), got {heldout_fraction}")
    problems = sorted({key(r) for r in records})
    if len(problems) < 2:
        raise ValueError(f"need at least two distinct problems to split, got {len(problems)}")
    random.Random(seed).shuffle(problems)
    k = min(len(problems) - 1, max(1, round(heldout_fraction * len(problems))))
    held = set(problems[:k])
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held]


def split_file(labels: str, out_dir: str, heldout_fraction: float = 0.25, seed: int = 0) -> dict[str, Any]:
    recs = read_labels(labels)
    train, held = split_by_problem(recs, heldout_fraction, seed)
    d = Path(out_dir)
    write_jsonl_atomic(d / "train.jsonl", train)
    write_jsonl_atomic(d / "heldout.jsonl", held)
    info = {"labels": labels, "heldout_fraction": heldout_fraction, "seed": seed,
            "train": {"traces": len(train), "problems": len({problem_key(r["problem"]) for r in train}),
                      "keys": [r["key"] for r in train]},
            "heldout": {"traces": len(held), "problems": len({problem_key(r["problem"]) for r in held}),
                        "keys": [r["key"] for r in held]}}
    write_json_atomic(d / "split.json", info)
    return info
