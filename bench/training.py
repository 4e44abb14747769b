"""The project's training stages versus a plain TRL script with the same config and data: seconds per step.

    python bench/training.py [--steps 12] [--stages sft,grpo] [--quick]

For each stage, two runs, each in a process of its own, one after the other, on the bundled model:
- project: `ucai train <stage>` (training/<stage>.py: the recipe training/recipes/smollm2-135m/<stage>.yaml, the run
  folder, metrics callback, manifest, saved adapter);
- plain:   a few lines of TRL (SFTTrainer / GRPOTrainer) given the recipe's TRL fields, the same LoRA config, the same
  rows converted the same way, and nothing else.
Both with --max_steps `--steps`; the step time is the median of the steps after the first two (a step timer added to
every trainer the same way). The data is made here: SFT rows (prompt, answer) and prompt rows from the bundled
prompts; GRPO — the RL stage the project recommends for GPUs (compose's TRAIN_RL_ALGO default) — starts from the base
model as the SFT policy and an untrained reward head on it (the step time does not depend on how good the reward is).

ratio = project s/step ÷ plain s/step of SFT (goal ≤ 1.05); `grpo_ratio` the same for GRPO.
Writes bench/results/training.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, bench_prompts, print_table, write_results  # noqa: E402

RECIPES = ROOT / "training" / "recipes" / "smollm2-135m"
# Recipe keys that are the project's (ModelConfig / UcaiArguments / RLInputs), not the TRL trainer config's.
PROJECT_KEYS = {"dtype", "padding_token", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                "sft_model_path", "reward_model_path", "model_name_or_path"}


def install_step_timer(times: list[float]) -> None:
    """Every Trainer of this process times its optimizer steps (same hook on both sides)."""
    from transformers import Trainer, TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.started)

    original = Trainer.train

    def train(self, *args, **kwargs):
        self.add_callback(StepTimer())
        return original(self, *args, **kwargs)

    Trainer.train = train


def make_data(workdir: Path, rows: int) -> dict[str, Path]:
    """An SFT dataset (messages ending with the assistant answer) and a reward model dir (untrained head)."""
    sft = workdir / "sft.jsonl"
    answers = ["I can't help with that, but I can suggest a safer way to handle the situation.",
               "Here is a short, careful answer that stays respectful and avoids harm to anyone involved."]
    with sft.open("w") as fh:
        for i, prompt in enumerate(bench_prompts(rows)):
            fh.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                              {"role": "assistant", "content": answers[i % 2] * 3}]}) + "\n")
    prompts = workdir / "prompts.jsonl"  # the RL stages read prompts
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in bench_prompts(rows)))
    return {"sft": sft, "prompts": prompts, "reward": workdir / "reward-model"}


def make_reward_model(path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ucai.model_prepare import resolve_model_path

    base = resolve_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(path))


def recipe_fields(stage: str) -> dict:
    import yaml

    return yaml.safe_load((RECIPES / f"{stage}.yaml").read_text())


def plain(stage: str, data: dict[str, Path], steps: int, out: Path) -> None:
    """The plain TRL script: the recipe's TRL fields, LoRA, the same rows — no run folder, no callbacks."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from ucai.model_prepare import resolve_model_path

    recipe = recipe_fields(stage)
    trl_fields = {k: v for k, v in recipe.items() if k not in PROJECT_KEYS}
    trl_fields.update(max_steps=steps, output_dir=str(out), report_to=[])
    lora = LoraConfig(r=recipe["lora_r"], lora_alpha=recipe["lora_alpha"], lora_dropout=recipe["lora_dropout"],
                      target_modules=recipe["lora_target_modules"], task_type="CAUSAL_LM")
    base = resolve_model_path()
    tok = AutoTokenizer.from_pretrained(base)
    tok.pad_token = recipe["padding_token"]
    rows = load_dataset("json", data_files=str(data["sft"]), split="train")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, recipe["dtype"]))
    model.config.pad_token_id = tok.pad_token_id
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        rows = rows.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                        remove_columns=rows.column_names)
        args = SFTConfig(**trl_fields, completion_only_loss=True)
        SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok, peft_config=lora).train()
        return
    import importlib

    importlib.import_module("trl.import_utils").is_vllm_available = lambda *a, **k: False  # as training/ does
    from trl import GRPOConfig, GRPOTrainer

    tok.padding_side = "left"
    reward_tok = AutoTokenizer.from_pretrained(base)
    reward_tok.pad_token = recipe["padding_token"]
    reward = AutoModelForSequenceClassification.from_pretrained(str(data["reward"]), num_labels=1)
    reward.config.pad_token_id = tok.pad_token_id
    rows = load_dataset("json", data_files=str(data["prompts"]), split="train")
    rows = rows.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}]}, remove_columns=rows.column_names)
    GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(**trl_fields), train_dataset=rows,
                processing_class=tok, reward_processing_classes=reward_tok, peft_config=lora).train()


def project_argv(stage: str, dataset: Path, reward_model: Path, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    """`ucai train <stage>`'s options (after the stage): an RL stage starts from the base model and the given reward
    model."""
    from training.stages import STAGES
    from ucai.model_prepare import resolve_model_path

    argv = ["--constitution", "bench", "--dataset", str(dataset), "--max_steps", str(steps), *extra]
    if STAGES[stage].rl:
        argv += ["--sft_model_path", resolve_model_path(), "--reward_model_path", str(reward_model)]
    return argv


def project(stage: str, dataset: Path, reward_model: Path, steps: int, extra: tuple[str, ...] = ()) -> None:
    """`ucai train <stage>` in this process."""
    from training.stages import STAGES

    STAGES[stage].run(project_argv(stage, dataset, reward_model, steps, extra))


def child(args: argparse.Namespace) -> None:
    times: list[float] = []
    install_step_timer(times)
    workdir = Path(args.workdir)
    data = {"sft": workdir / "sft.jsonl", "prompts": workdir / "prompts.jsonl", "reward": workdir / "reward-model"}
    side, stage = args.child.split(":")
    if side == "plain":
        plain(stage, data, args.steps, workdir / f"plain-{stage}")
    else:
        project(stage, data["sft" if stage == "sft" else "prompts"], data["reward"], args.steps)
    print("RESULT " + json.dumps({"times": times}), flush=True)


def run_child(script: str, child: str, workdir: Path, steps: int, log: Path, threads: int) -> dict:
    """`script --child <child>` in a process of its own (log: its stderr); returns the dict it printed as RESULT."""
    env = {**os.environ, "UCAI_ARTIFACTS": str(workdir / "artifacts"), "UCAI_CHAT_ADAPTERS": "none",
           "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as fh:
        done = subprocess.run([sys.executable, script, "--child", child, "--workdir", str(workdir),
                               "--steps", str(steps)], env=env, stdout=subprocess.PIPE, stderr=fh, text=True,
                              cwd=ROOT)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"{child} failed (exit {done.returncode}); see {log}")
    return json.loads(line.removeprefix("RESULT "))


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--stages", default="sft,grpo", help="sft and/or grpo")
    parser.add_argument("--rows", type=int, default=64, help="dataset rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of each run (default: every core; 1 beside a running vllm serve, whose "
                        "pinned OpenMP threads make a multi-threaded trainer crawl)")
    parser.add_argument("--logs", type=Path, default=ROOT / ".ucai" / "logs" / "bench")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 steps, SFT only")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/training.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return None
    if args.quick:
        args.steps, args.stages = 4, "sft"
    args.logs.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ucai-bench-train-") as tmp:
        workdir = Path(tmp)
        data = make_data(workdir, args.rows)
        if "grpo" in stages:
            make_reward_model(data["reward"])
        for stage in stages:
            row: dict = {"stage": stage, "steps": args.steps}
            for side in ("plain", "project"):
                times = run_child(__file__, f"{side}:{stage}", workdir, args.steps,
                                  args.logs / f"training-{side}-{stage}.log", args.threads)["times"]
                steady = times[2:] or times
                row[f"{side}_s_per_step"] = round(statistics.median(steady), 3)
                print(f"  {stage} {side}: {row[f'{side}_s_per_step']} s/step ({len(times)} steps)", flush=True)
            row["ratio"] = round(row["project_s_per_step"] / row["plain_s_per_step"], 3)
            rows.append(row)
    print_table(rows, ["stage", "steps", "plain_s_per_step", "project_s_per_step", "ratio"],
                title="training step time: the project's stage vs plain TRL (median after 2 warm-up steps)")
    by_stage = {r["stage"]: r["ratio"] for r in rows}
    payload = {"rows": rows, "grpo_ratio": by_stage.get("grpo"), "recipe": "smollm2-135m",
               "threads": args.threads}
    write_results("training", payload, by_stage.get("sft", rows[0]["ratio"]), out=args.out)
    return payload


if __name__ == "__main__":
    main()
