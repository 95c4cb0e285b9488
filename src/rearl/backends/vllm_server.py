"""Start and stop a real `vllm serve` on CPU for any model directory (docs/evaluation.md#vllm-on-cpu).

vLLM's CPU build lives in a venv of its own (`make vllm` builds `.venv-vllm`; it pins transformers
below the project's). Nothing here imports vLLM: the server runs as a subprocess of that venv's
python, in its own process group, with the flags measured to work on CPU (fp32, eager mode, thread
binding, a fixed KV-cache size). Its log goes to a file; a server that does not come up within
`startup_timeout` is stopped and the error carries the tail of that log.

    with VLLMServer("path/to/model") as srv:
        scorer = OpenAIReflectionScorer(srv.url, tokenizer="path/to/model")

From the shell (serves until Ctrl-C): `python -m rearl.backends.vllm_server MODEL --port 8011`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

VENV_ENV = "REARL_VLLM_VENV"  # where the vLLM venv is (default: .venv-vllm in the checkout)
CPUS_ENV = "REARL_VLLM_CPUS"  # cores for the server, e.g. "1" or "0-3" (default: all this process may use)


class VLLMServerError(RuntimeError):
    pass


def default_venv() -> Path:
    env = os.environ.get(VENV_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]  # src/rearl/backends/ -> the checkout (editable install)
    for base in (repo, Path.cwd()):
        if (base / ".venv-vllm" / "bin" / "python").exists():
            return base / ".venv-vllm"
    return repo / ".venv-vllm"


def venv_python(venv: str | Path | None = None) -> Path | None:
    """The vLLM venv's python if the venv is complete (`make vllm` finished), else None."""
    v = Path(venv) if venv else default_venv()
    py = v / "bin" / "python"
    return py if py.exists() and (v / ".installed").exists() else None


def cpu_list(cpus: str | None = None) -> str:
    """A core list like "0-1" or "1": the argument, else $REARL_VLLM_CPUS, else the cores this process may use."""
    cpus = cpus or os.environ.get(CPUS_ENV)
    if cpus:
        return cpus
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return ",".join(str(c) for c in cores)


def _count(cpus: str) -> int:
    n = 0
    for part in cpus.split(","):
        a, _, b = part.partition("-")
        n += int(b) - int(a) + 1 if b else 1
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, n_chars: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n_chars:].decode("utf-8", "replace")


class VLLMServer:
    """A `vllm serve MODEL` subprocess on CPU; a context manager that waits for /health and stops it.

    `cpus` binds vLLM's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND) and, with `taskset`, every
    process of the server to those cores. `kv_cache_gb` is VLLM_CPU_KVCACHE_SPACE. `dtype` float32 keeps an fp32 checkpoint in fp32
    (`auto` silently serves it in bfloat16).
    """

    def __init__(self, model: str, *, venv: str | Path | None = None, host: str = "127.0.0.1", port: int | None = None,
                 dtype: str = "float32", max_model_len: int = 4096, kv_cache_gb: float = 2, cpus: str | None = None,
                 enforce_eager: bool = True, max_logprobs: int = 20,
                 served_model_name: str | None = None, startup_timeout: float = 300.0, log_path: str | Path | None = None,
                 extra_args: Sequence[str] = (), env: dict[str, str] | None = None):
        from rearl.backends.embedded import resolve_model

        self.model = str(resolve_model(model))
        self.venv = Path(venv) if venv else default_venv()
        self.host, self.port = host, port or free_port()
        if float(kv_cache_gb) != int(kv_cache_gb) or int(kv_cache_gb) < 1:
            # VLLM_CPU_KVCACHE_SPACE is whole GiB: vLLM fails at start-up, minutes later, on "0.5"
            raise ValueError(f"kv_cache_gb must be a whole number of GiB >= 1, got {kv_cache_gb}")
        self.dtype, self.max_model_len, self.kv_cache_gb = dtype, max_model_len, int(kv_cache_gb)
        self.cpus = cpu_list(cpus)
        self.enforce_eager, self.max_logprobs = enforce_eager, max_logprobs
        self.served_model_name, self.startup_timeout = served_model_name, startup_timeout
        self.extra_args, self.extra_env = list(extra_args), dict(env or {})
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="rearl-vllm-")) / "server.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        py = venv_python(self.venv)
        if py is None:
            raise VLLMServerError(f"no vLLM venv at {self.venv} (run `make vllm`, or set {VENV_ENV})")
        cmd = [str(py), "-m", "vllm.entrypoints.cli.main", "serve", self.model, "--host", self.host,
               "--port", str(self.port), "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
               "--max-logprobs", str(self.max_logprobs)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        cmd += self.extra_args
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", self.cpus, *cmd]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):  # nothing of the project venv leaks in
            env.pop(k, None)
        env.update({
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gb),
            "VLLM_CPU_OMP_THREADS_BIND": self.cpus,
            "OMP_NUM_THREADS": str(_count(self.cpus)),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        })
        env.update(self.extra_env)
        return env

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def start(self) -> "VLLMServer":
        if self.proc is not None:
            return self
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.environment(), start_new_session=True)
        while True:
            if self.healthy():
                self.startup_seconds = time.monotonic() - t0
                return self
            code = self.proc.poll()
            waited = time.monotonic() - t0
            if code is not None or waited > self.startup_timeout:
                self.stop()
                why = f"exited with code {code}" if code is not None else f"not healthy after {self.startup_timeout:.0f} s"
                raise VLLMServerError(f"vLLM server for {self.model} {why}; log {self.log_path}, its tail:\n"
                                      f"{log_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `grace` seconds."""
        p, self.proc = self.proc, None
        if p is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; children in the group may linger a moment
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(p.pid):
                time.sleep(0.2)
            if not _group_alive(p.pid):
                break

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rearl.backends.vllm_server",
                                 description="Serve a model with vLLM on CPU (the .venv-vllm of `make vllm`) until Ctrl-C.")
    ap.add_argument("model", help="model directory, or 'default' (the embedded SmolLM2)")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cpus", default=None, help=f"cores, e.g. 1 or 0-3 (default: ${CPUS_ENV}, else all usable)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gb", type=float, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--venv", default=None, help=f"the vLLM venv (default: ${VENV_ENV}, else .venv-vllm)")
    ap.add_argument("--log", default=None, help="server log file (default: a temporary file)")
    ap.add_argument("--startup-timeout", type=float, default=300)
    a = ap.parse_args(argv)
    srv = VLLMServer(a.model, venv=a.venv, host=a.host, port=a.port, dtype=a.dtype, max_model_len=a.max_model_len,
                     kv_cache_gb=a.kv_cache_gb, cpus=a.cpus, startup_timeout=a.startup_timeout, log_path=a.log)
    print(f"starting vLLM on cores {srv.cpus}; log: {srv.log_path}", flush=True)
    try:
        with srv:
            print(f"serving {srv.model} at {srv.url} (up in {srv.startup_seconds:.0f} s); Ctrl-C stops it", flush=True)
            while srv.proc is not None and srv.proc.poll() is None:
                time.sleep(1)
            print(f"the server exited; log tail:\n{log_tail(srv.log_path)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except VLLMServerError as e:
        print(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
