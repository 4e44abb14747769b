"""DPO stage: directly on the preference dataset (the cheaper route); LoRA, adapter-disabled reference."""
from __future__ import annotations

from training import common, data


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("dpo", argv)
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    run = common.Run("dpo", cfg, recipe)
    ds = data.preference_conversational(data.load(cfg.dataset_path))
    train_ds, eval_ds = data.split(ds, cfg.eval_fraction, cfg.seed)

    tok = common.load_tokenizer(cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **common.model_kwargs(cfg))
    common.set_pad(model, tok)
    model = common.prepare_kbit(model, cfg)

    # ref_model=None with a LoRA peft_config: the adapter-disabled model is the reference (no second copy)
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=common.lora_config(cfg), callbacks=[run.callback])
    result = trainer.train(resume_from_checkpoint=run.resume_arg())
    metrics = {"global_step": trainer.state.global_step, **result.metrics}
    if eval_ds is not None:
        metrics.update(trainer.evaluate())

    out = run.dir / ("adapter" if cfg.use_peft else "model")
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    outputs = {out.name: str(out)}
    if cfg.use_peft and cfg.merge_adapter and not cfg.load_in_4bit:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(run.dir / "merged"))
        tok.save_pretrained(str(run.dir / "merged"))
        outputs["merged"] = str(run.dir / "merged")
    return run.finish(metrics, outputs)


if __name__ == "__main__":
    main()
