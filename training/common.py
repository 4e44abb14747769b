"""Shared pieces of the stage scripts: argument parsing (and --help), tokenizer/model loading, the run wrapper."""
from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from training import artifacts, data
from training.config import RecipeError, config_dict, load_config, recipe_path
from training.stages import STAGES
from training.usage import describe_fields
from ucai.layout import Layout
from ucai.settings import get_settings

log = logging.getLogger("ucai.training")


def build_parser(stage: str) -> argparse.ArgumentParser:
    """The stage's own arguments; `--help` also lists every config field (from the dataclass, with its help)."""
    spec = STAGES[stage]
    cls = spec.config_class()
    p = argparse.ArgumentParser(
        prog=f"ucai train {stage}", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"ucai train {stage} [--recipe NAME|PATH] [--constitution NAME] [--dataset PATH] [--FIELD VALUE ...]",
        description=f"UCAI {stage} stage: {spec.summary}.\nReads {spec.dataset_kind}, columns {list(spec.columns)}. "
                    "Any config field can be set in the recipe or overridden as --FIELD VALUE "
                    "(e.g. --max_steps 2 --learning_rate 1e-5).",
        epilog=describe_fields(cls) if cls is not None else f"{stage} is not available with the installed TRL.")
    p.add_argument("--recipe", default="smollm2-135m", metavar="NAME|PATH",
                   help="Recipe name under training/recipes/ (e.g. smollm2-135m) or a YAML path.")
    p.add_argument("--constitution", default=None, metavar="NAME",
                   help="Constitution name (any: letters, digits, '_', '-', '.'): whose data and runs.")
    p.add_argument("--dataset", default=None, metavar="PATH", help="Dataset file (.jsonl/.parquet); default: the "
                   "stage's dataset in UCAI_DATASETS_DIR (`ucai data generate` / `ucai data import`).")
    return p


def parse(stage: str, argv: list[str] | None, layout: Layout | None = None):
    """(config, recipe path). Unknown recipe/override fields and bad datasets fail here, before any model loads."""
    layout = layout or Layout.from_settings()
    args, rest = build_parser(stage).parse_known_args(argv)
    recipe = recipe_path(args.recipe, stage)
    if not recipe.exists():
        raise FileNotFoundError(f"recipe {recipe} not found")
    cfg = load_config(stage, recipe, rest, layout=layout, dataset_path=args.dataset, constitution=args.constitution)
    if not cfg.dataset_path:
        cfg.dataset_path = str(STAGES[stage].default_dataset(cfg.constitution, cfg.dataset_name, layout))
        if not Path(cfg.dataset_path).exists():
            raise data.DatasetFormatError(f"{stage}: no --dataset given and no dataset at {cfg.dataset_path} "
                                          "(run `ucai data generate` first)")
    data.check_columns(stage, cfg.dataset_path)
    return cfg, recipe


def torch_dtype(name: str | None):
    """A ModelConfig `dtype` string as from_pretrained takes it."""
    import torch

    return name if name in (None, "auto") else getattr(torch, name)


def quantised(cfg) -> bool:
    return bool(cfg.load_in_4bit or cfg.load_in_8bit)


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def load_tokenizer(cfg, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model_name_or_path, revision=cfg.model_revision)
    pad = cfg.padding_token or "<|endoftext|>"
    if pad in tok.get_vocab():
        tok.pad_token = pad  # not <|im_end|>: that would mask every ChatML turn end
    elif tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def model_kwargs(cfg) -> dict[str, Any]:
    """from_pretrained arguments of the base model: dtype, revision, attention, bitsandbytes (TRL's helper)."""
    from trl import get_quantization_config

    if quantised(cfg) and not has_bitsandbytes():
        # Not in the CPU install: importing it costs every training process ~1.5 s (peft imports it when present).
        raise RecipeError("this recipe loads the model in 4 or 8 bits (load_in_4bit / load_in_8bit), which needs "
                          "bitsandbytes and a CUDA GPU: pip install '.[train,qlora]' (the training image has it)")
    kw: dict[str, Any] = {"dtype": torch_dtype(cfg.dtype), "revision": cfg.model_revision}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    quantization = get_quantization_config(cfg)
    if quantization is not None:
        kw["quantization_config"] = quantization
    return kw


def load_causal_lm(cfg, tok):
    """The base causal LM to train (SFT, DPO): dtype/4-bit from the recipe, pad id from `tok`, k-bit prepared."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **model_kwargs(cfg))
    set_pad(model, tok)
    return prepare_kbit(model, cfg)


def prepare_kbit(model, cfg):
    if quantised(cfg):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def set_pad(model, tok) -> None:
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


class Run:
    """Run dir + metrics callback + timing; `finish()` writes the plot and the manifest and moves `latest`."""

    def __init__(self, stage: str, cfg, recipe: Path, layout: Layout | None = None):
        self.stage, self.cfg, self.recipe = stage, cfg, recipe
        self.layout = layout or Layout.from_settings()
        self.dir = self.layout.new_run_dir(cfg.constitution, stage, cfg.run_id)
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
        self.layout.set_latest(self.dir)
        log.info("%s run written to %s", self.stage, self.dir)
        print(f"{self.stage}: {self.dir}")
        register_with_chat(self.layout, self.cfg.constitution, self.stage)
        return manifest


def register_with_chat(layout: Layout, constitution: str, stage: str) -> None:
    """A running chat engine serves the new adapter at once (vLLM runtime LoRA loading); none running is fine —
    `ucai up` serves it at the next start."""
    from ucai import chat_adapters

    name = chat_adapters.served_name(constitution, stage)
    adapter = chat_adapters.discover(layout).get(name)
    if adapter is None or not chat_adapters.wanted(get_settings().chat_adapters, name):
        return  # not a chat adapter (a reward model), or narrowed away by UCAI_CHAT_ADAPTERS
    try:
        report = chat_adapters.sync_now({name: adapter})
    except chat_adapters.ChatEngineUnavailable:
        log.info("no chat engine running: %s will be served at the next `ucai up`", name)
        return
    if report.failed:
        print(f"chat: could not register {name}: {report.failed[name]}")
    elif name in report.loaded + report.updated:
        print(f"chat: now serving {name}")


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
    if cfg.use_peft and cfg.merge_adapter and not quantised(cfg):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(run.dir / "merged"))
        tok.save_pretrained(str(run.dir / "merged"))
        outputs["merged"] = str(run.dir / "merged")
    return run.finish(metrics, outputs)
