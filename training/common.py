"""Shared pieces of the stage scripts: argument parsing, tokenizer/model loading, LoRA config, the run wrapper."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from training import artifacts, data
from training.config import CONSTITUTIONS, config_dict, load_config, recipe_path

log = logging.getLogger("ucai.training")


def build_parser(stage: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"ucai train {stage}", description=f"UCAI {stage} stage. Any config field "
                                "can be overridden as --field value (e.g. --max_steps 2 --learning_rate 1e-5).")
    p.add_argument("--recipe", default="smollm2-135m",
                   help="Recipe name under training/recipes/ (e.g. smollm2-135m) or a YAML path.")
    p.add_argument("--constitution", choices=CONSTITUTIONS, default=None, help="Which constitution's data/artefacts.")
    p.add_argument("--dataset", default=None, help="Dataset file (.jsonl/.parquet) from `ucai data generate`; "
                   "default: the constitution's generated dataset in UCAI_DATASETS_DIR.")
    return p


def parse(stage: str, argv: list[str] | None):
    """(config, recipe path). Unknown recipe/override fields and bad datasets fail here, before any model loads."""
    args, rest = build_parser(stage).parse_known_args(argv)
    recipe = recipe_path(args.recipe, stage)
    if not recipe.exists():
        raise FileNotFoundError(f"recipe {recipe} not found")
    cfg = load_config(stage, recipe, rest, dataset_path=args.dataset, constitution=args.constitution)
    if cfg.model_name_or_path.startswith("~"):
        cfg.model_name_or_path = str(Path(cfg.model_name_or_path).expanduser())
    if not cfg.dataset_path:
        cfg.dataset_path = str(data.default_path(stage, cfg.constitution, cfg.dataset_name))
        if not Path(cfg.dataset_path).exists():
            raise data.DatasetFormatError(f"{stage}: no --dataset given and no generated dataset at "
                                          f"{cfg.dataset_path} (run `ucai data generate` first)")
    data.check_columns(stage, cfg.dataset_path)
    return cfg, recipe


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "auto": "auto"}[name]


def load_tokenizer(cfg, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    pad = cfg.padding_token or "<|endoftext|>"
    if pad in tok.get_vocab():
        tok.pad_token = pad  # not <|im_end|>: that would mask every ChatML turn end
    elif tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def model_kwargs(cfg) -> dict[str, Any]:
    kw: dict[str, Any] = {"dtype": torch_dtype(cfg.torch_dtype)}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype=torch_dtype(cfg.bnb_4bit_compute_dtype),
            bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant)
    return kw


def load_causal_lm(cfg, tok):
    """The base causal LM to train (SFT, DPO): dtype/4-bit from the recipe, pad id from `tok`, k-bit prepared."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **model_kwargs(cfg))
    set_pad(model, tok)
    return prepare_kbit(model, cfg)


def prepare_kbit(model, cfg):
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def lora_config(cfg, task_type: str = "CAUSAL_LM"):
    if not cfg.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), task_type=task_type, bias="none")


def set_pad(model, tok) -> None:
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


class Run:
    """Run dir + metrics callback + timing; `finish()` writes the plot and the manifest and moves `latest`."""

    def __init__(self, stage: str, cfg, recipe: Path):
        self.stage, self.cfg, self.recipe = stage, cfg, recipe
        self.dir = artifacts.new_run_dir(cfg.constitution, stage, cfg.run_id)
        cfg.output_dir = str(self.dir / "checkpoints")
        cfg.run_id = self.dir.name
        if not cfg.report_to or cfg.report_to == "all":
            cfg.report_to = []
        self.callback = artifacts.MetricsCallback(self.dir)
        self.t0 = time.time()
        self.dataset_info = data.manifest_info(cfg.dataset_path)

    def resume_arg(self):
        """`resume_from_checkpoint: true` resumes from the last checkpoint of this run dir (if any)."""
        r = self.cfg.resume_from_checkpoint
        if r in (None, False, "false", "False", ""):
            return None
        if r in (True, "true", "True"):
            ckpts = sorted(Path(self.cfg.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            return str(ckpts[-1]) if ckpts else None
        return r

    def finish(self, metrics: dict[str, Any], outputs: dict[str, str], extra: dict[str, Any] | None = None):
        artifacts.plot_curves(self.dir)
        losses = [r["loss"] for r in self.callback.records if isinstance(r.get("loss"), int | float)]
        if losses:
            metrics = {"first_loss": losses[0], "last_loss": losses[-1], **metrics}
        wall = time.time() - self.t0
        steps = metrics.get("global_step") or 0
        if steps:  # training time only where the trainer reports it (PPO: whole run incl. model loading)
            metrics["seconds_per_step"] = round((metrics.get("train_runtime") or wall) / steps, 3)
        manifest = artifacts.write_manifest(
            self.dir, stage=self.stage, constitution=self.cfg.constitution, base_model=self.cfg.model_name_or_path,
            dataset=self.dataset_info, recipe=str(self.recipe), config=config_dict(self.cfg), metrics=metrics,
            wall_time_s=wall, outputs=outputs, extra=extra)
        log.info("%s run written to %s", self.stage, self.dir)
        print(f"{self.stage}: {self.dir}")
        return manifest


def train_and_save(trainer, tok, cfg, run: Run, eval_ds) -> dict[str, Any]:
    """Train (resuming if asked), evaluate, save the adapter (or model) and optionally a merged copy, finish the run."""
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
