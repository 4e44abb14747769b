"""What every RL stage (PPO, RLOO, GRPO) starts from: the SFT policy, the reward model and the prompts; and what
it ends with: an adapter on the SFT policy plus one combined adapter on the plain base model, the one to serve."""
from __future__ import annotations

from pathlib import Path

from training import common
from training.lora_folding import combine_lora
from ucai.layout import Layout
from ucai.prompts import record_conversation


def resolve(path: str, constitution: str, stage: str, sub: str, layout: Layout | None = None) -> Path:
    """An explicit path (or its `sub/` folder), else the latest `stage` run of the constitution."""
    if path:
        p = Path(path).expanduser()
        return p / sub if (p / sub).exists() else p
    layout = layout or Layout.from_settings()
    run = layout.latest_run(constitution, stage)
    if run is None or not (run / sub).exists():
        raise FileNotFoundError(f"RL needs a {stage} artefact: none found for constitution {constitution!r} "
                                f"under {layout.artifacts_dir} (run `ucai train {stage}` first or pass "
                                f"--{'sft_model_path' if stage == 'sft' else 'reward_model_path'})")
    return run / sub


def prompt_messages(row) -> list[dict]:
    """The conversation up to the answer: from `messages` (SFT rows) or `prompt` (prompt / preference rows)."""
    conversation = record_conversation(row)
    return [m for m in conversation if m["role"] != "assistant"] or conversation[:1]


def resolve_inputs(cfg, layout: Layout | None = None) -> tuple[Path, Path]:
    """(SFT adapter dir, reward model dir), found before any run dir is made or model loaded."""
    return (resolve(cfg.sft_model_path, cfg.constitution, "sft", "adapter", layout),
            resolve(cfg.reward_model_path, cfg.constitution, "reward", "model", layout))


def load_sft_policy(cfg, tok, sft_dir: Path):
    """The base model with the SFT adapter merged in; a full model dir is loaded as is."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if (sft_dir / "adapter_config.json").exists():
        base = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **common.model_kwargs(cfg))
        policy = PeftModel.from_pretrained(base, str(sft_dir)).merge_and_unload()
    else:
        policy = AutoModelForCausalLM.from_pretrained(str(sft_dir), **common.model_kwargs(cfg))
    common.set_pad(policy, tok)
    return policy


def load_reward_model(cfg, tok, rm_dir: Path):
    """The merged sequence-classification model the reward stage wrote."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(rm_dir), num_labels=1,
                                                               dtype=common.torch_dtype(cfg.dtype))
    model.config.pad_token_id = tok.pad_token_id
    return model


def reference_of(trainer, kl_coef: float) -> str:
    """What the KL term compares against, read off the trainer (not assumed): TRL leaves `ref_model` None when the
    policy is a PEFT model, and uses the policy with its adapter disabled."""
    if not kl_coef:
        return "none (no KL term)"
    if getattr(trainer, "ref_model", None) is None:
        return "adapter-disabled policy (SFT)"
    return "separate reference model copy"


def save_outputs(trainer, tok, run_dir: Path, sft_dir: Path) -> dict[str, str]:
    """adapter/ (relative to base+SFT) and serving_adapter/ (SFT and RL deltas as one LoRA on the plain base)."""
    out = run_dir / "adapter"
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    outputs = {"adapter": str(out)}
    if (sft_dir / "adapter_config.json").exists() and (out / "adapter_config.json").exists():
        outputs["serving_adapter"] = str(combine_lora(sft_dir, out, run_dir / "serving_adapter"))
    return outputs
