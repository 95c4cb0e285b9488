"""Scoring in windows: a reflection model trained on windows of paragraphs reads a long trace the
same way, window by window, and its P(Result) per window is joined into one list per trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


class WindowedScorer:
    """Scores a trace window by window, as a window-trained model saw its examples.

    Windows are consecutive paragraphs within `window_tokens` tokens of `tokenizer` (the policy
    tokenizer the labels were made with), numbering restarting at [1]; P(Result) of the windows is
    concatenated. Same interface as the backends' scorers, so `detect_file(..., scorer=...)` takes it.
    """

    def __init__(self, inner: Any, window_tokens: int, tokenizer: Any, partial_labels: str = "think"):
        if partial_labels not in ("think", "fail"):
            raise ValueError(f"partial_labels must be 'think' or 'fail', got {partial_labels!r}")
        self.inner, self.window_tokens, self.tokenizer = inner, window_tokens, tokenizer
        self.partial_labels = partial_labels

    def score(self, problems: Sequence[str], paragraphs: Sequence[Sequence[str]], mode: str = "forward") -> list[Any]:
        from rearl.reflector.labels import group_paragraphs, paragraph_token_counts
        from rearl.reflector.prompt import ScoreOutcome

        flat_q: list[str] = []
        flat_p: list[list[str]] = []
        spans: list[list[tuple[int, int]]] = []
        for q, ps in zip(problems, paragraphs):
            groups = group_paragraphs(paragraph_token_counts(self.tokenizer, ps), self.window_tokens) if ps else []
            spans.append(groups)
            for a, b in groups:
                flat_q.append(q)
                flat_p.append(list(ps[a:b]))
        res = self.inner.score(flat_q, flat_p, mode) if flat_q else []
        out, k = [], 0
        for ps, groups in zip(paragraphs, spans):
            p: list[float] = []
            shown, err, secs = 0, None, 0.0
            for a, b in groups:
                r = res[k]
                k += 1
                secs += r.seconds
                if r.error is not None and err is None:
                    err = r.error
                got = list(r.p_result or [])[: b - a]
                want = min(b - a, r.n_shown or (b - a))  # the window's paragraphs that fit its prompt
                if r.error is None and len(got) < want and self.partial_labels == "fail" and err is None:
                    # reflection_partial_labels: fail, as for whole traces (a padded list would hide it)
                    err = f"the reflection model labelled {len(got)} of the {want} paragraphs of window [{a}, {b})"
                shown += len(got)
                p += got + [0.0] * (b - a - len(got))  # a label the window did not give counts as Think
            out.append(ScoreOutcome(None if err else p, len(ps), shown, error=err, seconds=secs))
        return out


def model_window(model: str, window_tokens: int | None, tokenizer: str | None = None) -> int | None:
    """The window a reflection model should score in: `window_tokens` if given (0 = whole trace),
    else what the model was trained with (its rearl_reflector.json, in the model's directory or, for a
    served model, in its tokenizer's directory when that is the model's; None for other models)."""
    if window_tokens is not None:
        return window_tokens or None
    from rearl.reflector.train import read_meta

    for d in (model, tokenizer):
        if d and Path(d).is_dir():
            meta = read_meta(d)
            if meta:
                return meta.get("window_tokens")
    return None


def windowed(scorer: Any, model: str, window_tokens: int | None, policy_tokenizer: Any, *,
             tokenizer: str | None = None, partial_labels: str = "think", warn: Any = None) -> Any:
    """`scorer` wrapped in a WindowedScorer when the model scores in windows (see `model_window`). A served
    model whose training window cannot be read scores whole traces: `warn` (a callable) is told so."""
    from rearl.backends import is_url

    w = model_window(model, window_tokens, tokenizer)
    if w is None and window_tokens is None and is_url(model) and warn is not None:
        warn(f"reflection model {model}: its training window is unknown here (no rearl_reflector.json in "
             f"reflection_tokenizer {tokenizer!r}), so it scores whole traces; a model trained on windows "
             f"(`rearl reflector train --window-tokens N`) must be told: reflection_window_tokens: N (0 = whole traces "
             f"and no warning)")
    return WindowedScorer(scorer, w, policy_tokenizer, partial_labels) if w else scorer
