"""SFT stage: LoRA (or QLoRA) on the SFT dataset; loss on the final assistant revision only."""
from __future__ import annotations

from dataclasses import dataclass

from trl import SFTConfig

from training import common, data
from training.config import UcaiArguments


@dataclass
class UcaiSFTConfig(SFTConfig, UcaiArguments):
    """SFT on the SFT dataset (`messages`), answer-only loss through the prompt/completion format."""


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("sft", argv)  # fails on bad recipe / dataset before any model loads
    from trl import SFTTrainer, get_peft_config

    run = common.Run("sft", cfg, recipe)
    ds = data.sft_prompt_completion(data.load(cfg.dataset_path))
    train_ds, eval_ds = data.split(ds, cfg.eval_fraction, cfg.seed)

    tok = common.load_tokenizer(cfg)
    model = common.load_causal_lm(cfg, tok)
    if cfg.completion_only_loss is None:
        cfg.completion_only_loss = True  # prompt/completion format: loss on the completion (the revision) only

    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=get_peft_config(cfg), callbacks=[run.callback])
    return common.train_and_save(trainer, tok, cfg, run, eval_ds)


if __name__ == "__main__":
    main()
