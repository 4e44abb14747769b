# UCAI training jobs (sft, reward, ppo/rloo/grpo, dpo) on NVIDIA GPUs: CUDA torch, bitsandbytes (QLoRA nf4),
# TRL 1.12 (the last with PPO), DeepSpeed for multi-GPU. Build from the repository root:
#   docker build -f docker/training.Dockerfile -t ucai-training .
# Run through compose: `docker compose --profile train run sft --constitution ethical`.
# devel image: DeepSpeed compiles its fused optimisers with nvcc at first use.
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ARG TORCH_VERSION=2.9.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/hf-cache \
    UCAI_ARTIFACTS=/artifacts \
    UCAI_DATASETS_DIR=/datasets

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-dev git \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3 /usr/local/bin/python

# CUDA torch first, from PyTorch's index, so the `train` extra's `torch>=…` is already met by it.
RUN python -m pip install --upgrade pip \
    && python -m pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY ucai/ ucai/
COPY services/ services/
COPY gateway/ gateway/
COPY training/ training/
RUN python -m pip install ".[train,qlora,data,multigpu]"

# `python -m training <stage> …`; compose's per-stage services put the stage and recipe in front of the user's args.
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
