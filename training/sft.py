"""SFT stage: LoRA (or QLoRA) on the SFT dataset; loss on the final assistant revision only."""
from __future__ import annotations

from training import common, data


def main(argv: list[str] | None = None) -> dict:
    cfg, recipe = common.parse("sft", argv)  # fails on bad recipe / dataset before any model loads
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    run = common.Run("sft", cfg, recipe)
    ds = data.sft_prompt_completion(data.load(cfg.dataset_path))
    train_ds, eval_ds = data.split(ds, cfg.eval_fraction, cfg.seed)

    tok = common.load_tokenizer(cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **common.model_kwargs(cfg))
    common.set_pad(model, tok)
    model = common.prepare_kbit(model, cfg)
    if cfg.completion_only_loss is None:
        cfg.completion_only_loss = True  # prompt/completion format: loss on the completion (the revision) only

    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=common.lora_config(cfg), callbacks=[run.callback])
    result = trainer.train(resume_from_checkpoint=run.resume_arg())
    metrics = {"global_step": trainer.state.global_step, **result.metrics}
    if eval_ds is not None:
        metrics.update(trainer.evaluate())

    adapter_dir = run.dir / ("adapter" if cfg.use_peft else "model")
    trainer.save_model(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    outputs = {"adapter" if cfg.use_peft else "model": str(adapter_dir)}
    if cfg.use_peft and cfg.merge_adapter and not cfg.load_in_4bit:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(run.dir / "merged"))
        tok.save_pretrained(str(run.dir / "merged"))
        outputs["merged"] = str(run.dir / "merged")
    return run.finish(metrics, outputs)


if __name__ == "__main__":
    main()
