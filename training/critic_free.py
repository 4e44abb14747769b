"""RLOO and GRPO stages: critic-free alternatives to PPO on the same inputs (SFT policy, reward model, prompts).

Several sampled answers per prompt; each answer's advantage is its reward against the others' (leave-one-out mean
for RLOO, group mean/std for GRPO), so there is no value model to train. The KL term (`beta`) is against the
adapter-disabled policy, i.e. the SFT policy (LoRA on the merged SFT model, no reference copy).
"""
from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig, RLOOConfig

from training import common, data, rl_inputs
from training.config import RLInputs, UcaiArguments


@dataclass
class UcaiRLOOConfig(RLInputs, RLOOConfig, UcaiArguments):
    """RLOO (critic-free): leave-one-out baseline over `num_generations` samples per prompt."""


@dataclass
class UcaiGRPOConfig(RLInputs, GRPOConfig, UcaiArguments):
    """GRPO (critic-free): group-normalised advantages over `num_generations` samples per prompt."""


def _trainer_classes(algo: str):
    # This venv also holds vLLM 0.32 (the serving side); TRL 1.12's optional vLLM client fails to import against it.
    # The training stages never generate with vLLM, so TRL is told it is absent before its trainers load.
    import importlib

    import_utils = importlib.import_module("trl.import_utils")  # trl is a lazy module: no attribute access
    import_utils.is_vllm_available = lambda *args, **kwargs: False
    if algo == "grpo":
        from trl import GRPOTrainer

        return GRPOTrainer
    from trl import RLOOTrainer

    return RLOOTrainer


def rloo(argv: list[str] | None = None) -> dict:
    return main("rloo", argv)


def grpo(argv: list[str] | None = None) -> dict:
    return main("grpo", argv)


def main(algo: str, argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse(algo, argv)
    sft_dir, rm_dir = rl_inputs.resolve_inputs(cfg)
    trainer_cls = _trainer_classes(algo)
    from trl import get_peft_config

    run = common.Run(algo, cfg, recipe)
    tok = common.load_tokenizer(cfg, padding_side="left")  # generation pads left, with <|endoftext|>
    ds = data.load(cfg.dataset_path)
    ds = ds.map(lambda row: {"prompt": rl_inputs.prompt_messages(row)}, remove_columns=ds.column_names)

    policy = rl_inputs.load_sft_policy(cfg, tok, sft_dir)
    reward_model = rl_inputs.load_reward_model(cfg, tok, rm_dir)
    reward_tok = common.load_tokenizer(cfg, padding_side="right")  # the reward model pools the last non-pad token

    trainer = trainer_cls(model=policy, reward_funcs=reward_model, args=cfg, train_dataset=ds,
                          processing_class=tok, reward_processing_classes=reward_tok,
                          peft_config=get_peft_config(cfg), callbacks=[run.callback])
    result = trainer.train(resume_from_checkpoint=run.resume_arg())
    rewards = [r["reward"] for r in run.callback.records if isinstance(r.get("reward"), int | float)]
    kls = [r["kl"] for r in run.callback.records if isinstance(r.get("kl"), int | float)]
    metrics = {"global_step": trainer.state.global_step, **result.metrics, "steps_logged": len(rewards),
               "first_reward": rewards[0] if rewards else None, "last_reward": rewards[-1] if rewards else None,
               "last_kl": kls[-1] if kls else None,
               "reference": rl_inputs.reference_of(trainer, cfg.beta)}
    outputs = rl_inputs.save_outputs(trainer, tok, run.dir, sft_dir)
    return run.finish(metrics, outputs,
                      extra={"algo": algo, "policy_base": str(sft_dir), "reward_model": str(rm_dir)})

