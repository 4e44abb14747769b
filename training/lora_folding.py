"""LoRA adapter arithmetic.

PPO trains a new LoRA on top of base+SFT adapter (merged). Both deltas are low-rank, so their sum is one LoRA of
rank r_sft + r_rl: A = [A_sft; A_rl], B = [s_sft·B_sft, s_rl·B_rl] with scaling 1 (alpha = r). That combined adapter
applies to the plain base model, which is what `vllm serve --lora-modules` needs.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def _load(adapter_dir: Path):
    from safetensors.torch import load_file

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if cfg.get("use_rslora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("modules_to_save"):
        raise ValueError(f"{adapter_dir}: only plain LoRA adapters can be combined")
    return cfg, load_file(str(adapter_dir / "adapter_model.safetensors"))


def combine_lora(first: str | Path, second: str | Path, out_dir: str | Path) -> Path:
    """Write one adapter equal to applying `first` then `second` (both on the same base architecture)."""
    import torch
    from safetensors.torch import save_file

    first, second, out_dir = Path(first), Path(second), Path(out_dir)
    (c1, w1), (c2, w2) = _load(first), _load(second)
    r1, r2 = c1["r"], c2["r"]
    s1, s2 = c1["lora_alpha"] / r1, c2["lora_alpha"] / r2
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in list(w1) + list(w2) if ".lora_A." in k})
    out = {}
    for mod in modules:
        a_key, b_key = f"{mod}.lora_A.weight", f"{mod}.lora_B.weight"
        ref_a = w1.get(a_key, w2.get(a_key))
        ref_b = w1.get(b_key, w2.get(b_key))
        a1 = w1.get(a_key, torch.zeros(r1, ref_a.shape[1], dtype=ref_a.dtype))
        b1 = w1.get(b_key, torch.zeros(ref_b.shape[0], r1, dtype=ref_b.dtype))
        a2 = w2.get(a_key, torch.zeros(r2, ref_a.shape[1], dtype=ref_a.dtype))
        b2 = w2.get(b_key, torch.zeros(ref_b.shape[0], r2, dtype=ref_b.dtype))
        out[a_key] = torch.cat([a1, a2], dim=0).contiguous()
        out[b_key] = torch.cat([b1 * s1, b2 * s2], dim=1).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    targets = sorted(set(c1["target_modules"]) | set(c2["target_modules"]))
    cfg = {**c1, "r": r1 + r2, "lora_alpha": r1 + r2, "target_modules": targets}
    (out_dir / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (second / name).exists():
            shutil.copy(second / name, out_dir / name)
    return out_dir
