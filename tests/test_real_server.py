"""Against a real OpenAI-compatible server: llama.cpp's llama-server serving the embedded GGUF.

The binary is not on PyPI as a wheel that runs here; `scripts/build_llama_server.sh` builds it
(about 10 minutes) into ~/.cache/rearl/bin. Without it these tests are skipped, saying so.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from rearl.backends.embedded import cache_dir, gguf_path, prepare_default_model
from rearl.backends.server import OpenAIPolicy, OpenAIReflectionScorer

pytestmark = pytest.mark.slow


def _binary():
    for c in (os.environ.get("REARL_LLAMA_SERVER"), str(cache_dir() / "bin" / "llama-server"), shutil.which("llama-server")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def llama_server():
    binary = _binary()
    if binary is None:
        pytest.skip("no llama-server binary (run scripts/build_llama_server.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "-m", str(gguf_path()), "--host", "127.0.0.1", "--port", str(port), "-t", "2",
                             "-c", "8192", "--no-webui"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.5)
        else:
            pytest.fail("llama-server did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


PARAS = ["We need 6 times 7.", "6 times 7 is 42, so the answer is 42.", "Wait, let me check again: 42."]


def test_reflection_scoring_generate_on_real_server(llama_server):
    sc = OpenAIReflectionScorer(llama_server, tokenizer=str(prepare_default_model()), retries=1, timeout=120)
    (o,) = sc.score(["What is 6 times 7?"], [PARAS], "generate")
    assert o.error is None, o.error
    assert o.reply and len(o.p_result) <= 3
    assert all(0.0 <= p <= 1.0 for p in o.p_result)


def test_forward_mode_needs_echo_and_fails_per_trace(llama_server):
    # llama.cpp does not return prompt logprobs with `echo`; vLLM does. The failure is per trace.
    sc = OpenAIReflectionScorer(llama_server, tokenizer=str(prepare_default_model()), retries=0, timeout=60)
    (o,) = sc.score(["What is 6 times 7?"], [PARAS], "forward")
    assert o.p_result is None and "echo" in o.error


def test_policy_continues_token_ids_on_real_server(llama_server):
    pol = OpenAIPolicy(llama_server, tokenizer=str(prepare_default_model()), retries=1)
    tok = pol.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    (g,) = pol.generate([ids], max_new_tokens=8, temperature=0.0)
    assert 1 <= len(g.ids) <= 9 and g.text
    assert g.finished == (g.ids[-1] == tok.eos_token_id)
