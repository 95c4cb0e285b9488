"""Answer verification with math-verify in a persistent, killable worker pool.

Why a pool of our own: math-verify's timeouts use `signal.alarm`, which only works on the main
thread (TRL may call rewards elsewhere), and some inputs hang inside sympy where no in-process
timeout reaches (Math-Verify #65). The authors' code builds a new process pool per reward call
(docs/method.md#accuracy-reward). Here worker processes live as long as the pool; an item that overruns its timeout has
its worker killed and replaced, and comes back as ``VerifyResult(ok=False, timeout=True)``.

One dispatcher thread owns all worker I/O; callers on any thread submit items and wait on futures.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterable, Sequence

from rearl.core.answers import extract_answer
from rearl.core.text import ThinkTags

DEFAULT_TIMEOUT = 5.0
STARTUP_TIMEOUT = 120.0  # seconds a fresh worker may take to import math-verify
_MAX_STARTUP_FAILURES = 3  # workers in a row that die or hang at start, with none ready: the pool gives up


class VerifierError(RuntimeError):
    """The pool cannot check answers at all (workers cannot start, or it was closed with items in
    flight). Raised instead of reporting every answer as wrong: a reward of 0 for everything would
    let training run while learning nothing."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    timeout: bool = False
    error: str | None = None

    def __bool__(self) -> bool:
        return self.ok


class _Worker:
    def __init__(self, python: str, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [python, "-m", "rearl.core._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""
        self.ready = False
        self.started = time.monotonic()
        self.task: tuple[int, Future, float, tuple[str, str, bool]] | None = None

    def send(self, task_id: int, gold: str, pred: str, raw: bool = False) -> None:
        msg = json.dumps({"id": task_id, "gold": gold, "pred": pred, "raw": raw}) + "\n"
        self.proc.stdin.write(msg.encode("ascii"))

    def read_lines(self) -> list[dict] | None:
        """Complete messages available now; None on EOF (the worker died)."""
        try:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.kill()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass


class VerifierPool:
    """Persistent math-verify workers with a hard per-item timeout.

    >>> pool = VerifierPool(workers=2, timeout=5)
    >>> pool.verify("\\\\frac{1}{2}", "0.5").ok
    True
    """

    def __init__(self, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT, cache_size: int = 65536,
                 python: str | None = None, startup_timeout: float = STARTUP_TIMEOUT):
        self.n_workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self._python = python or sys.executable
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self._env.setdefault("OMP_NUM_THREADS", "1")
        self._inbox: "queue.SimpleQueue[tuple[tuple[str, str, bool], Future]]" = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._cache: "collections.OrderedDict[tuple[str, str, bool], VerifyResult]" = collections.OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._closed = False
        self._fatal: str | None = None
        self._state = threading.Lock()  # makes "not closed, so enqueue" atomic against close()
        self._startup_failures = 0
        self.stats = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="rearl-verifier", daemon=True)
        self._thread.start()

    # -- public API -------------------------------------------------------------------------
    def submit(self, gold: str, pred: str, raw: bool = False) -> Future:
        """Check `pred` against `gold` in a worker. `raw`: `pred` is a whole answer text that
        math-verify extracts from itself (the ``math_verify`` extraction mode)."""
        fut: Future = Future()
        key = (str(gold), str(pred), bool(raw))
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None:
            fut.set_result(hit)
            return fut
        with self._state:
            if self._closed:
                raise VerifierError(self._fatal or "VerifierPool is closed")
            self._inbox.put((key, fut))
        os.write(self._wake_w, b"x")
        return fut

    def verify(self, gold: str, pred: str) -> VerifyResult:
        """Is `pred` equivalent to `gold`? Gold first: math-verify is asymmetric."""
        return self.submit(gold, pred).result()

    def verify_batch(self, pairs: Iterable[tuple[str, str]]) -> list[VerifyResult]:
        """[(gold, pred), ...] -> results, in order, checked in parallel."""
        futs = [self.submit(g, p) for g, p in pairs]
        return [f.result() for f in futs]

    def close(self) -> None:
        """Stop the workers. Items not checked yet fail with `VerifierError` (never left waiting)."""
        with self._state:
            if self._closed:
                return
            self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- dispatcher thread ------------------------------------------------------------------
    def _remember(self, key: tuple[str, str, bool], res: VerifyResult) -> None:
        if res.timeout:
            return
        with self._cache_lock:
            self._cache[key] = res
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        workers: list[_Worker] = []
        pending: "collections.deque[tuple[tuple[str, str, bool], Future]]" = collections.deque()
        next_id = 0

        def spawn() -> _Worker:
            w = _Worker(self._python, self._env)
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            workers.append(w)
            self.stats["spawned"] += 1
            return w

        def retire(w: _Worker, result: VerifyResult | Exception | None) -> None:
            try:
                sel.unregister(w.proc.stdout)
            except (KeyError, ValueError):
                pass
            w.kill()
            workers.remove(w)
            if w.task is not None and result is not None:
                _, fut, _, key = w.task
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    self._remember(key, result)
                    fut.set_result(result)

        def startup_failed(w: _Worker, why: str) -> None:
            self._startup_failures += 1
            self.stats["startup_failures"] += 1
            if self._startup_failures >= _MAX_STARTUP_FAILURES and not any(x.ready for x in workers if x is not w):
                raise VerifierError(
                    f"verifier workers cannot start ({self._python} -m rearl.core._verify_worker {why}, "
                    f"{self._startup_failures} times in a row); check that math-verify is installed")

        try:
            for _ in range(self.n_workers):
                spawn()
            while not self._closed:
                while True:
                    try:
                        pending.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for w in workers:
                    if w.ready and w.task is None and pending:
                        key, fut = pending.popleft()
                        if not fut.set_running_or_notify_cancel():
                            continue
                        next_id += 1
                        w.task = (next_id, fut, time.monotonic() + self.timeout, key)
                        try:
                            w.send(next_id, *key)
                        except OSError:
                            spawn()  # replacement first: a caller woken by the result sees a full pool
                            retire(w, VerifyResult(False, error="worker died"))
                            break
                now = time.monotonic()
                deadlines = [w.task[2] for w in workers if w.task is not None]
                deadlines += [w.started + self.startup_timeout for w in workers if not w.ready]
                wait = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in sel.select(wait):
                    w = key.data
                    if w is None:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        continue
                    if w not in workers:
                        continue
                    msgs = w.read_lines()
                    if msgs is None:
                        self.stats["died"] += 1
                        if not w.ready:
                            startup_failed(w, "exits")
                        spawn()
                        retire(w, VerifyResult(False, error="worker died"))
                        continue
                    for m in msgs:
                        if m.get("ready"):
                            w.ready = True
                            self._startup_failures = 0
                        elif w.task is not None and m.get("id") == w.task[0]:
                            _, fut, _, key = w.task
                            w.task = None
                            res = VerifyResult(bool(m.get("ok")), False, m.get("error"))
                            self._remember(key, res)
                            fut.set_result(res)
                            self.stats["done"] += 1
                now = time.monotonic()
                for w in list(workers):
                    if w.task is not None and now >= w.task[2]:
                        self.stats["timeouts"] += 1
                        spawn()
                        retire(w, VerifyResult(False, timeout=True, error=f"timeout after {self.timeout:g}s"))
                    elif not w.ready and now >= w.started + self.startup_timeout:
                        startup_failed(w, f"hangs at start for {self.startup_timeout:g}s")
                        retire(w, None)
                        spawn()
        except BaseException as e:  # noqa: BLE001 - never leave a caller waiting forever
            with self._state:
                self._fatal = str(e) if isinstance(e, VerifierError) else f"verifier pool failed: {type(e).__name__}: {e}"
                self._closed = True
        finally:
            # Every item still here fails loudly: the ones in workers, the ones taken from the inbox but
            # not sent yet, and the ones still in the inbox (no submit can add more: _closed is set).
            err = VerifierError(self._fatal or "verifier pool closed before the item was checked")
            for w in list(workers):
                retire(w, err)
            while pending:
                fut = pending.popleft()[1]
                if not fut.done():
                    fut.set_exception(err)
            self._fail_inbox(err)
            sel.close()

    def _fail_inbox(self, err: Exception) -> None:
        while True:
            try:
                _, fut = self._inbox.get_nowait()
            except queue.Empty:
                return
            if not fut.done():
                fut.set_exception(err)


_default_pool: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool used by the reward functions (created on first use)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = VerifierPool(timeout=float(os.environ.get("REARL_VERIFY_TIMEOUT", DEFAULT_TIMEOUT)))
            atexit.register(_default_pool.close)
        return _default_pool


def is_correct(
    completion: str,
    gold: str,
    *,
    mode: str = "answer_part",
    tags: ThinkTags = ThinkTags(),
    require_close: bool = False,
    pool: VerifierPool | None = None,
) -> VerifyResult:
    """Extract the final answer of `completion` and check it against `gold`."""
    return check_completions([completion], [gold], mode=mode, tags=tags, require_close=require_close, pool=pool)[0]


def check_completions(
    completions: Sequence[str],
    golds: Sequence[str],
    *,
    mode: str = "answer_part",
    tags: ThinkTags = ThinkTags(),
    require_close: bool = False,
    pool: VerifierPool | None = None,
) -> list[VerifyResult]:
    """Batch form of `is_correct`: extraction here, equivalence checks in parallel in the pool."""
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    pool = pool or default_pool()
    answers = [extract_answer(c, mode, tags, require_close).answer for c in completions]
    raw = mode == "math_verify"
    futs = [pool.submit(str(g), a, raw) if a is not None and g is not None else None for g, a in zip(golds, answers)]
    return [f.result() if f is not None else VerifyResult(False, error="no answer") for f in futs]
