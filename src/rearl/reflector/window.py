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

    def __init__(self, inner: Any, window_tokens: int, tokenizer: Any):
        self.inner, self.window_tokens, self.tokenizer = inner, window_tokens, tokenizer

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
                shown += len(got)
                p += got + [0.0] * (b - a - len(got))  # a label the window did not give counts as Think
            out.append(ScoreOutcome(None if err else p, len(ps), shown, error=err, seconds=secs))
        return out


def model_window(model: str, window_tokens: int | None) -> int | None:
    """The window a reflection model should score in: `window_tokens` if given (0 = whole trace),
    else what the model was trained with (its rearl_reflector.json; None for other models)."""
    if window_tokens is not None:
        return window_tokens or None
    from rearl.reflector.train import read_meta

    return (read_meta(model) if Path(model).is_dir() else {}).get("window_tokens")


def windowed(scorer: Any, model: str, window_tokens: int | None, policy_tokenizer: Any) -> Any:
    """`scorer` wrapped in a WindowedScorer when the model scores in windows (see `model_window`)."""
    w = model_window(model, window_tokens)
    return WindowedScorer(scorer, w, policy_tokenizer) if w else scorer
