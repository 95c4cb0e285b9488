"""Prompts shared by training, revision and evaluation."""

from __future__ import annotations

from typing import Any

# The user prompt of docs/training.md / docs/evaluation.md (no system prompt).
MATH_PROMPT = "Please reason step by step, and put your final answer within \\boxed{{}}.\n\nQuestion: {problem}"


def math_messages(problem: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": MATH_PROMPT.format(problem=problem)}]


def policy_prompt_ids(tokenizer: Any, problem: str) -> list[int]:
    """Chat-templated prompt ids for a math problem (generation prompt included)."""
    text = tokenizer.apply_chat_template(math_messages(problem), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def opens_thinking(tokenizer: Any) -> bool:
    """Whether the chat template ends the generation prompt inside `<think>` (recent R1 templates):
    completions then carry no opening tag, and one without `</think>` is unfinished, not plain text."""
    ids = policy_prompt_ids(tokenizer, "1 + 1")
    return tokenizer.decode(ids, skip_special_tokens=False).rstrip().endswith("<think>")
