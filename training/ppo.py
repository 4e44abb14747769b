"""PPO stage: the SFT policy (SFT adapter merged into the base) gets a new LoRA adapter; rewards from the reward
model; the KL penalty is against the adapter-disabled policy, i.e. the SFT policy itself (ref_model=None, no copy).

`adapter/` is relative to base+SFT adapter (`policy_base` in the manifest names the SFT adapter);
`serving_adapter/` is both combined into one LoRA on the plain base model, the one to serve.
"""
from __future__ import annotations

from pathlib import Path

from training import artifacts, common, data
from training.adapters import combine_lora


def _resolve(path: str, constitution: str, stage: str, sub: str) -> Path:
    if path:
        p = Path(path).expanduser()
        return p / sub if (p / sub).exists() else p
    run = artifacts.latest(constitution, stage)
    if run is None or not (run / sub).exists():
        raise FileNotFoundError(f"ppo needs a {stage} artefact: none found for constitution {constitution!r} "
                                f"under {artifacts.artifacts_root()} (run `ucai train {stage}` first or pass "
                                f"--{'sft_model_path' if stage == 'sft' else 'reward_model_path'})")
    return run / sub


def tokenised_prompts(ds, tok, max_prompt_length: int):
    """Chat-templated prompts (generation prompt added) as pre-tokenised `input_ids` only, as PPOTrainer needs."""
    def encode(row):
        if "messages" in row and row["messages"]:
            msgs = [m for m in row["messages"] if m["role"] != "assistant"] or row["messages"][:1]
            msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
        else:
            msgs = [{"role": "user", "content": row["prompt"]}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return {"input_ids": list(ids)[-max_prompt_length:]}

    return ds.map(encode, remove_columns=ds.column_names)


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("ppo", argv)
    sft_dir = _resolve(cfg.sft_model_path, cfg.constitution, "sft", "adapter")
    rm_dir = _resolve(cfg.reward_model_path, cfg.constitution, "reward", "model")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOTrainer

    run = common.Run("ppo", cfg, recipe)
    tok = common.load_tokenizer(cfg, padding_side="left")  # left padding with <|endoftext|>, never <|im_end|>
    ds = tokenised_prompts(data.load(cfg.dataset_path), tok, cfg.max_prompt_length)
    eval_ds = ds.select(range(min(len(ds), 4)))

    base = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **common.model_kwargs(cfg))
    if (sft_dir / "adapter_config.json").exists():
        policy = PeftModel.from_pretrained(base, str(sft_dir)).merge_and_unload()  # the SFT policy
    else:
        policy = AutoModelForCausalLM.from_pretrained(str(sft_dir), **common.model_kwargs(cfg))
    common.set_pad(policy, tok)
    dtype = common.torch_dtype(cfg.torch_dtype)
    reward_model = AutoModelForSequenceClassification.from_pretrained(str(rm_dir), num_labels=1, dtype=dtype)
    value_model = AutoModelForSequenceClassification.from_pretrained(str(rm_dir), num_labels=1, dtype=dtype)
    for m in (reward_model, value_model):
        m.config.pad_token_id = tok.pad_token_id

    per_update = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if cfg.max_steps and cfg.max_steps > 0:
        cfg.total_episodes = cfg.max_steps * per_update
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                         value_model=value_model, train_dataset=ds, eval_dataset=eval_ds,
                         peft_config=common.lora_config(cfg), callbacks=[run.callback])
    trainer.train()
    steps = trainer.state.global_step
    kl = [r.get("objective/kl") for r in run.callback.records if "objective/kl" in r]
    scores = [r.get("objective/scores") for r in run.callback.records if "objective/scores" in r]
    metrics = {"global_step": steps, "updates_logged": len(kl), "last_kl": kl[-1] if kl else None,
               "last_score": scores[-1] if scores else None, "reference": "adapter-disabled policy (SFT)"}

    trainer.is_distributed_loading_by_transformers = False  # else save_model fails in trl 1.12
    out = run.dir / "adapter"
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    outputs = {"adapter": str(out)}
    if (sft_dir / "adapter_config.json").exists():  # SFT + RL deltas as one adapter on the plain base (for vLLM)
        outputs["serving_adapter"] = str(combine_lora(sft_dir, out, run.dir / "serving_adapter"))
    return run.finish(metrics, outputs,
                      extra={"policy_base": str(sft_dir), "reward_model": str(rm_dir)})


if __name__ == "__main__":
    main()
