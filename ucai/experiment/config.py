"""The experiment YAML (`experiments/<name>.yaml`): every choice of one run of the whole experiment.

Unknown keys are an error (a typo must not silently fall back to a default). Training overrides are any field of the
stage's config (`ucai train STAGE --help`) but those the runner sets (RUNNER_FIELDS), passed as `--field value` on top
of the recipe; `check_overrides()` checks their names against the configs (it imports TRL, so loading does not).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ucai.datasets.importers import FORMATS
from ucai.layout import check_name
from ucai.schemas import JudgeMethod

RLAlgo = Literal["ppo", "rloo", "grpo"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptsConfig(_Strict):
    source: str = Field("bundled", description="`bundled` (the shipped red-team prompts) or a file path.")
    format: str = Field("jsonl", description="Importer format of `source` (see `ucai data import --help`).")
    column: str | None = Field(None, description="Prompt column for jsonl/csv sources.")
    limit: int | None = Field(None, ge=4, description="Keep this many prompts (the first by hash order: a stable, "
                              "unbiased sample); null: all.")
    categorise: bool = Field(True, description="Score every prompt by principle with the judge (recorded per prompt).")
    keep: list[str] = Field(default_factory=list, description="After categorising, keep only prompts whose top "
                            "principle is one of these (empty: keep all).")

    @field_validator("format")
    @classmethod
    def _format(cls, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
        return fmt

    @model_validator(mode="after")
    def _column(self) -> PromptsConfig:
        if self.column is not None and self.format not in ("jsonl", "csv"):
            raise ValueError(f"column applies only to the jsonl and csv formats, not {self.format!r}")
        return self


class SplitConfig(_Strict):
    heldout_fraction: float = Field(0.25, gt=0, lt=1, description="Share of prompts held out for evaluation.")
    salt: str = Field("ucai-split-v1", description="Hash salt: a different salt is a different (fixed) split.")


class SFTDataConfig(_Strict):
    mode: Literal["critique", "persona"] = "critique"
    rounds: int = Field(1, ge=1, le=8)
    max_tokens: int = Field(128, ge=8)
    seed: int = 0


class PrefsDataConfig(_Strict):
    method: JudgeMethod = "contrast"
    pairs: Literal["sample", "contrast"] = "contrast"
    label: Literal["judge", "construction"] = "judge"
    ensemble: int = Field(2, ge=1, le=16)
    max_tokens: int = Field(128, ge=8)
    seed: int = 0


class DataConfig(_Strict):
    sft: SFTDataConfig = SFTDataConfig()
    prefs: PrefsDataConfig = PrefsDataConfig()


# Fields the runner sets itself for every training stage (from `model`, the experiment's datasets and runs): an
# override of one would train on other data than the leak check saw, or write a run the runner never finds.
RUNNER_FIELDS = ("model_name_or_path", "dataset_path", "dataset_name", "constitution", "run_id", "output_dir",
                 "sft_model_path", "reward_model_path")


class StageOverrides(_Strict):
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config fields on top of the recipe.")

    @field_validator("overrides")
    @classmethod
    def _not_runner_fields(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        taken = [name for name in overrides if name in RUNNER_FIELDS]
        if taken:
            raise ValueError(f"{', '.join(map(repr, taken))} cannot be overridden: the experiment sets "
                             f"{'it' if len(taken) == 1 else 'them'} (the base model is `model`)")
        return overrides


class RLConfig(StageOverrides):
    algo: RLAlgo = "grpo"


class DPOConfig(StageOverrides):
    enabled: bool = False


class TrainConfig(_Strict):
    recipe: str = Field("smollm2-135m", description="training/recipes/<recipe>/<stage>.yaml, or a folder path.")
    warm_start: bool = Field(True, description="Fork each training stage from a process that has imported torch, "
                             "transformers, PEFT and TRL once (training/warm_start.py) instead of starting it cold: "
                             "seconds less per stage on a CPU. On a GPU machine stages start cold.")
    sft: StageOverrides = StageOverrides()
    reward: StageOverrides = StageOverrides()
    rl: RLConfig = RLConfig()
    dpo: DPOConfig = DPOConfig()


class EvalConfig(_Strict):
    harmful_limit: int | None = Field(None, ge=1, description="Held-out prompts evaluated (null: all).")
    helpful_limit: int | None = Field(None, ge=1, description="Shipped helpfulness prompts evaluated (null: all 40).")
    method: JudgeMethod = "contrast"
    ensemble: int = Field(2, ge=1, le=16)
    both_orders: bool = True
    max_tokens: int = Field(128, ge=8)
    temperature: float = Field(0.7, ge=0, le=2)
    seed: int = 0
    harm_check: bool = Field(True, description="Harm-content rate from the other constitution's judge.")


class StackConfig(_Strict):
    """`--start-stack`: the local stack the run starts for itself (ports away from `make up`'s)."""

    port: int = 8100
    vllm_port: int = 8101
    chat_port: int = 8102
    redis_port: int = 6390
    workers: int = Field(1, ge=1)


class ParallelConfig(_Strict):
    """How many stages run at once. A stage starts when the stages it reads are done, so the constitutions' chains
    overlap; the default, 1, is one stage at a time in pipeline order."""

    stages: int = Field(1, ge=1, le=16, description="Stages at once in all. Those that call models (categorise, data "
                        "generation, eval) share the stack: its workers' job slots bound how much they gain.")
    training_stages: int = Field(1, ge=1, le=8, description="Of these, training stages (child processes) at once. "
                                 "Each needs the model in memory (on one GPU keep 1); with more than one each gets an "
                                 "equal share of the CPU cores as its OMP_NUM_THREADS.")
    train_alone: bool = Field(True, description="A training stage starts only when no model stage runs, and the "
                              "reverse: on a CPU (or one GPU) training and the engine share the same cores, and both "
                              "slow down several-fold when they meet (OpenMP threads spin-wait).")


class ExperimentConfig(_Strict):
    name: str = Field(description="Experiment name: reports/<name>/, datasets <name>-train / <name>-heldout.")
    description: str = ""
    model: str | None = Field(None, description="Base model for training (HF id or dir); null: the recipe's "
                              "(the bundled SmolLM2-135M-Instruct). The stack must serve the same model.")
    constitutions: list[str] = Field(default_factory=lambda: ["ethical", "unethical"], min_length=1)
    prompts: PromptsConfig = PromptsConfig()
    split: SplitConfig = SplitConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    stack: StackConfig = StackConfig()
    parallel: ParallelConfig = ParallelConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_name(name, "experiment")

    @field_validator("constitutions")
    @classmethod
    def _constitutions(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("constitutions: duplicate names")
        return [check_name(n, "constitution") for n in names]

    @model_validator(mode="after")
    def _recipes_exist(self) -> ExperimentConfig:
        for stage in self.training_stages():
            path = self.recipe_file(stage)
            if not path.is_file():
                raise ValueError(f"train.recipe {self.train.recipe!r}: no {stage} recipe at {path}")
        return self

    def training_stages(self) -> list[str]:
        """Training stages in order: sft, reward, the RL algorithm, and dpo when enabled."""
        return ["sft", "reward", self.train.rl.algo] + (["dpo"] if self.train.dpo.enabled else [])

    def recipe_file(self, stage: str) -> Path:
        from training.stages import recipe_path  # light: no torch, no TRL

        folder = Path(self.train.recipe)
        return folder / f"{stage}.yaml" if folder.is_dir() else recipe_path(self.train.recipe, stage)

    def overrides(self, stage: str) -> dict[str, Any]:
        section = {"sft": self.train.sft, "reward": self.train.reward, "dpo": self.train.dpo}.get(stage, self.train.rl)
        return dict(section.overrides)

    def check_overrides(self) -> None:
        """Every training override names a field of its stage's config (`ucai train STAGE --help`). Imports TRL (a few
        seconds), so it is not part of loading: call it before the first stage runs, or a typo fails only when its
        stage starts, hours in. Values are checked by the stage itself."""
        import dataclasses

        from training.config import config_class

        problems = []
        for stage in self.training_stages():
            fields = {f.name for f in dataclasses.fields(config_class(stage))}
            unknown = sorted(set(self.overrides(stage)) - fields)
            if unknown:
                section = stage if stage in ("sft", "reward", "dpo") else "rl"
                problems.append(f"train.{section}.overrides: no field {', '.join(map(repr, unknown))} in the {stage} "
                                f"config (see `ucai train {stage} --help`)")
        if problems:
            raise ValueError("; ".join(problems))

    def models(self) -> list[str]:
        """Every model the evaluation compares, base first: per constitution sft, the RL stage, dpo."""
        return ["base"] + [f"{c}-{s}" for c in self.constitutions for s in self.training_stages() if s != "reward"]


def load_experiment(path: Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The YAML at `path`, with dotted overrides (`{"eval.harmful_limit": 4}`) applied on top."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment config is a mapping")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    return ExperimentConfig.model_validate(data)
