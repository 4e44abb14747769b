"""DPO stage: directly on the preference dataset (the cheaper route); LoRA, adapter-disabled reference."""
from __future__ import annotations

from dataclasses import dataclass

from trl import DPOConfig

from training import common, data
from training.config import UcaiArguments


@dataclass
class UcaiDPOConfig(DPOConfig, UcaiArguments):
    """DPO directly on the preference dataset."""


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("dpo", argv)
    from trl import DPOTrainer, get_peft_config

    run = common.Run("dpo", cfg, recipe)
    ds = data.preference_conversational(data.load(cfg.dataset_path))
    train_ds, eval_ds = data.split(ds, cfg.eval_fraction, cfg.seed)

    tok = common.load_tokenizer(cfg)
    model = common.load_causal_lm(cfg, tok)

    # ref_model=None with a LoRA peft_config: the adapter-disabled model is the reference (no second copy)
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=get_peft_config(cfg), callbacks=[run.callback])
    return common.train_and_save(trainer, tok, cfg, run, eval_ds)


if __name__ == "__main__":
    main()
