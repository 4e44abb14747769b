"""PPO stage: the SFT policy (SFT adapter merged into the base) gets a new LoRA adapter; rewards from the reward
model; the KL penalty is against the adapter-disabled policy, i.e. the SFT policy itself (ref_model=None, no copy).

`adapter/` is relative to base+SFT adapter (`policy_base` in the manifest names the SFT adapter);
`serving_adapter/` is both combined into one LoRA on the plain base model, the one to serve.
The critic-free alternatives on the same inputs are stages of their own (training/critic_free.py); `--algo rloo|grpo`
still runs them from here.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from training import common, data, rl_inputs, stages
from training.config import RLInputs, UcaiArguments

try:  # PPO lives in trl.experimental in 1.12 (removed from 1.13 on)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.ppo import PPOConfig
except ImportError:  # pragma: no cover - depends on the installed TRL
    PPOConfig = None

if PPOConfig is not None:

    @dataclass
    class UcaiPPOConfig(RLInputs, PPOConfig, UcaiArguments):
        """PPO: SFT LoRA policy (merged) + new LoRA, reward model, adapter-disabled reference."""
else:  # pragma: no cover
    UcaiPPOConfig = None


def tokenised_prompts(ds, tok, max_prompt_length: int):
    """Chat-templated prompts (generation prompt added) as pre-tokenised `input_ids` only, as PPOTrainer needs."""
    def encode(row):
        ids = tok.apply_chat_template(rl_inputs.prompt_messages(row), add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return {"input_ids": list(ids)[-max_prompt_length:]}

    return ds.map(encode, remove_columns=ds.column_names)


def main(argv: list[str] | None = None) -> dict:
    stage, argv = stages.resolve("ppo", sys.argv[1:] if argv is None else argv)
    if stage.name != "ppo":  # `--algo rloo|grpo`
        return stage.run(argv)
    cfg, recipe = common.parse("ppo", argv)
    sft_dir, rm_dir = rl_inputs.resolve_inputs(cfg)
    from trl import get_peft_config
    from trl.experimental.ppo import PPOTrainer

    run = common.Run("ppo", cfg, recipe)
    tok = common.load_tokenizer(cfg, padding_side="left")  # left padding with <|endoftext|>, never <|im_end|>
    ds = tokenised_prompts(data.load(cfg.dataset_path), tok, cfg.max_prompt_length)
    eval_ds = ds.select(range(min(len(ds), 4)))

    policy = rl_inputs.load_sft_policy(cfg, tok, sft_dir)
    reward_model = rl_inputs.load_reward_model(cfg, tok, rm_dir)
    value_model = rl_inputs.load_reward_model(cfg, tok, rm_dir)  # the critic starts from the reward model

    per_update = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if cfg.max_steps and cfg.max_steps > 0:
        cfg.total_episodes = cfg.max_steps * per_update
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=reward_model,
                         value_model=value_model, train_dataset=ds, eval_dataset=eval_ds,
                         peft_config=get_peft_config(cfg), callbacks=[run.callback])
    trainer.train()
    kl = [r.get("objective/kl") for r in run.callback.records if "objective/kl" in r]
    scores = [r.get("objective/scores") for r in run.callback.records if "objective/scores" in r]
    metrics = {"global_step": trainer.state.global_step, "updates_logged": len(kl),
               "last_kl": kl[-1] if kl else None, "last_score": scores[-1] if scores else None,
               "reference": rl_inputs.reference_of(trainer, cfg.kl_coef)}

    trainer.is_distributed_loading_by_transformers = False  # else save_model fails in trl 1.12
    outputs = rl_inputs.save_outputs(trainer, tok, run.dir, sft_dir)
    return run.finish(metrics, outputs,
                      extra={"algo": "ppo", "policy_base": str(sft_dir), "reward_model": str(rm_dir)})


if __name__ == "__main__":
    main()
