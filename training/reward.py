"""Reward stage: sequence-classification reward model on the preference dataset (judge `margin` where present).

Reports held-out pairwise accuracy and writes a merged reward model directory (`model/`), which PPO loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from training import common, data
from training.config import UcaiArguments


@dataclass
class UcaiRewardConfig(RewardConfig, UcaiArguments):
    """Sequence-classification reward model on the preference dataset."""

    use_margin: bool = field(default=True, metadata={"help": "Use the judge's `margin` column where present."})
    margin_scale: float = field(default=1.0, metadata={"help": "Multiplier applied to the `margin` column."})
    lora_task_type: str = field(default="SEQ_CLS", metadata={
        "help": "LoRA task type; SEQ_CLS also trains (and saves) the score head."})


def pairwise_accuracy(model, tok, rows, max_length: int = 512, batch_size: int = 8) -> dict[str, float]:
    """Share of held-out pairs where r(chosen) > r(rejected), and the mean reward gap."""
    import torch

    model.eval()
    wins, gaps = 0, []
    texts_c = [tok.apply_chat_template(r["prompt"] + r["chosen"], tokenize=False) for r in rows]
    texts_r = [tok.apply_chat_template(r["prompt"] + r["rejected"], tokenize=False) for r in rows]

    def scores(texts):
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out.extend(model(**enc).logits[:, 0].float().tolist())
        return out

    for c, r in zip(scores(texts_c), scores(texts_r), strict=True):
        wins += c > r
        gaps.append(c - r)
    n = max(len(gaps), 1)
    return {"pairwise_accuracy": wins / n, "mean_reward_gap": sum(gaps) / n, "eval_pairs": len(gaps)}


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("reward", argv)
    from transformers import AutoModelForSequenceClassification
    from trl import RewardTrainer, get_peft_config

    run = common.Run("reward", cfg, recipe)
    ds = data.preference_conversational(data.load(cfg.dataset_path), keep_margin=cfg.use_margin,
                                        margin_scale=cfg.margin_scale)
    train_ds, eval_ds = data.split(ds, cfg.eval_fraction, cfg.seed)

    tok = common.load_tokenizer(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model_name_or_path, num_labels=1,
                                                               **common.model_kwargs(cfg))
    common.set_pad(model, tok)  # sequence classification pools the last non-pad token: pad must not be <|im_end|>
    model = common.prepare_kbit(model, cfg)

    trainer = RewardTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                            processing_class=tok, peft_config=get_peft_config(cfg),
                            callbacks=[run.callback])
    result = trainer.train(resume_from_checkpoint=run.resume_arg())
    metrics = {"global_step": trainer.state.global_step, "used_margin": "margin" in train_ds.column_names,
               **result.metrics}
    if eval_ds is not None:
        metrics.update(pairwise_accuracy(trainer.model, tok, list(eval_ds), cfg.max_length or 512))
        print(f"reward: held-out pairwise accuracy {metrics['pairwise_accuracy']:.3f} "
              f"on {metrics['eval_pairs']} pairs")

    outputs = {}
    model = trainer.model
    if cfg.use_peft:
        trainer.save_model(str(run.dir / "adapter"))
        outputs["adapter"] = str(run.dir / "adapter")
        if not common.quantised(cfg):
            model = model.merge_and_unload()
    model_dir = run.dir / "model"
    if cfg.use_peft and common.quantised(cfg):  # QLoRA: merge the adapter into an unquantised reload of the base
        from peft import PeftModel

        del trainer, model
        base = AutoModelForSequenceClassification.from_pretrained(
            cfg.model_name_or_path, num_labels=1, dtype=common.torch_dtype(cfg.dtype), revision=cfg.model_revision)
        common.set_pad(base, tok)
        model = PeftModel.from_pretrained(base, outputs["adapter"]).merge_and_unload()
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    outputs["model"] = str(model_dir)
    return run.finish(metrics, outputs)


if __name__ == "__main__":
    main()
