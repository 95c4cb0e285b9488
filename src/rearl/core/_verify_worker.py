"""A verifier worker process: JSON lines in on stdin, JSON lines out on stdout.

Started by `rearl.core.verify.VerifierPool` as `python -m rearl.core._verify_worker`. It runs math-verify with
its own timeouts off: the pool kills the whole process when an item overruns, which also stops
hangs inside C code or sympy that no in-process timeout can interrupt (Math-Verify issue #65).
"""

from __future__ import annotations

import json
import logging
import os
import sys


def _wrap(s: str) -> str:
    return s if "$" in s or "\\boxed" in s else "\\boxed{" + s + "}"


def equivalent(gold: str, pred: str, raw: bool = False) -> bool:
    """`raw`: `pred` is a whole answer text for math-verify's own extraction, not an extracted answer."""
    from math_verify import parse, verify

    from rearl.core.normalize import normalize_answer

    if not raw and normalize_answer(gold) == normalize_answer(pred):
        return True
    g = parse(_wrap(gold), parsing_timeout=None)
    if not g:
        return False
    p = parse(pred if raw else _wrap(pred), parsing_timeout=None)
    if not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))


def main() -> None:
    logging.disable(logging.CRITICAL)  # math-verify logs on every unparsable item
    out = sys.stdout
    # Keep stray prints from libraries off the protocol channel.
    sys.stdout = open(os.devnull, "w")
    import math_verify  # noqa: F401  (pay the import before announcing readiness)

    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        try:
            ok, err = equivalent(str(msg["gold"]), str(msg["pred"]), bool(msg.get("raw"))), None
        except BaseException as e:  # noqa: BLE001 - anything math-verify raises is a "no"
            ok, err = False, f"{type(e).__name__}: {e}"[:300]
        out.write(json.dumps({"id": msg.get("id"), "ok": ok, "error": err}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
