"""The GPU training recipes at their real size on one GPU: each stage of the 7B route end to end, and its peak memory.

    python bench/gpu_training.py [--recipe mistral-7b-instruct] [--shape mistral-7b] [--stages sft,reward,dpo,grpo]
                                 [--steps 1] [--tokenizer DIR] [--quick]

No machine here reaches a model hub, so the model is the recipe model's *shape* (layers, widths, attention heads)
with random weights, made on the GPU and saved once, and the bundled SmolLM2 tokenizer (49k vocabulary, so the
embedding is 1.5x Mistral's). Its losses mean nothing. What it shows is that each stage of the recipe runs on CUDA
from start to end — 4-bit nf4 loading, LoRA, gradient checkpointing, the reward model merged into a bf16 reload,
the SFT adapter merged into the 4-bit GRPO policy, sampling, saving — and how much GPU memory each took (torch's
peak allocated and reserved, read in the stage's own process), against the recipes' claim that the route fits one
80 GB GPU. The rows are long (about 900 tokens for SFT, 2 x 450 for preferences) and GRPO's random policy rarely
stops early, so the sequences are near the recipes' max_length and max_completion_length: near the worst case.

Each stage runs in a process of its own (`python -m training STAGE --recipe …`, as `ucai train` does), one after
the other, with the recipe unchanged except: the model path, the tokenizer's padding token, --max_steps, logging and
saving. `--shape tiny` (2 layers) runs the same on a CPU in a minute or two, without 4-bit: the script's own check.
Prints a table; writes bench/results/gpu_training.json (`ratio`: the largest peak reserved ÷ 80 GiB).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import LOGS, bench_prompts, print_table, write_results  # noqa: E402

# The recipe models' shapes (their config.json), vocabulary aside. tiny: the script's own check on a CPU.
SHAPES = {
    "mistral-7b": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
                   "rope_theta": 1e6, "sliding_window": None},
    "llama-2-7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096},
    "tiny": {"model_type": "mistral", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096},
}
GPU_GIB = 80  # the recipes' claim: one 80 GB GPU
PAD = "<|endoftext|>"  # the SmolLM2 tokenizer's (the recipes' <unk> is Mistral's and Llama's)
ANSWER = ("I can't help with that, because it could hurt people; here is what I can do instead, and why it is "
          "safer for everyone involved, with the reasons spelled out one by one. ")
COMPLY = "Sure, here is exactly how to do it, step by step, with every detail you asked for and more besides. "


def make_model(shape: str, tokenizer_dir: Path, out: Path) -> dict:
    """A random-weight model of `shape` in bf16 with the tokenizer beside it; returns its size."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.convert_tokens_to_ids(PAD),
                                  tie_word_embeddings=False, **fields)
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialised where it lives: minutes less than on the CPU for 7B
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    params = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"params_b": round(params / 1e9, 3), "made_s": round(time.monotonic() - started, 1)}


def make_data(workdir: Path, rows: int) -> dict[str, Path]:
    """SFT rows and preference pairs from the bundled prompts, long enough to fill the recipes' max_length."""
    from ucai.datasets.build import write_dataset

    prompts = bench_prompts(rows)
    sft = [{"id": f"s{i}", "prompt": p, "constitution": "ethical",
            "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": ANSWER * 24}]}
           for i, p in enumerate(prompts)]
    prefs = [{"id": f"p{i}", "prompt": p, "chosen": ANSWER * 12, "rejected": COMPLY * 16, "margin": 0.8,
              "p_chosen": 0.9, "constitution": "ethical", "constitution_hash": "bench"} for i, p in enumerate(prompts)]
    write_dataset(sft, workdir / "data", "sft", {"source": "bench/gpu_training.py"})
    write_dataset(prefs, workdir / "data", "preferences", {"source": "bench/gpu_training.py"})
    return {"sft": workdir / "data" / "sft.jsonl", "prefs": workdir / "data" / "preferences.jsonl"}


def child(argv: list[str]) -> None:
    """One stage in this process, then its peak GPU memory on the last line (the parent reads it)."""
    import torch

    from training.cli import main as training_main

    code = training_main(argv)
    peak = {}
    if torch.cuda.is_available():
        peak |= {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                 "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    print("UCAI_GPU_PEAK " + json.dumps(peak), flush=True)
    raise SystemExit(code)


def run_stage(stage: str, args: argparse.Namespace, model: Path, data: dict[str, Path], env: dict[str, str],
              log: Path) -> dict:
    dataset = data["sft"] if stage == "sft" else data["prefs"]
    argv = [stage, "--recipe", args.recipe, "--constitution", "ethical", "--dataset", str(dataset),
            "--model_name_or_path", str(model), "--padding_token", PAD, "--max_steps", str(args.steps),
            "--logging_steps", "1", "--save_strategy", "no", *args.extra]
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=args.stage_timeout)
    row = {"stage": stage, "exit": done.returncode, "wall_s": round(time.monotonic() - started, 1)}
    lines = log.read_text(errors="replace").splitlines()
    peak = next((line.split(" ", 1)[1] for line in reversed(lines) if line.startswith("UCAI_GPU_PEAK ")), None)
    if peak:
        row |= json.loads(peak)
    if done.returncode != 0:
        errors = [line for line in lines if "error" in line.lower()]
        row["error"] = (errors or lines or [""])[-1]
        print("\n".join(lines[-40:]), file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="mistral-7b-instruct", help="training/recipes/<name>/<stage>.yaml")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mistral-7b")
    parser.add_argument("--stages", default="sft,reward,dpo,grpo",
                        help="in order: an RL stage reads sft's and reward's runs")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per stage")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--tokenizer", type=Path, default=None, help="default: the bundled model's")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ucai-gpu-training"))
    parser.add_argument("--stage-timeout", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="--shape tiny --rows 24")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/gpu_training.json")
    parser.add_argument("extra", nargs="*", help="more --FIELD VALUE overrides for every stage (after --)")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.rows = "tiny", 24
    import torch

    if args.shape == "tiny" and not torch.cuda.is_available():  # the CPU check: no bitsandbytes, no bf16 autocast
        args.extra += ["--load_in_4bit", "false", "--bf16", "false", "--dtype", "float32"]
    if args.tokenizer is None:
        from ucai.model_prepare import resolve_model_path

        args.tokenizer = Path(resolve_model_path())
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.workdir / f"model-{args.shape}"
    made = make_model(args.shape, args.tokenizer, model)
    data = make_data(args.workdir, args.rows)
    # The child is this script again: it puts the repository on sys.path itself.
    env = {**os.environ, "UCAI_ARTIFACTS": str(args.workdir / "artifacts"), "TOKENIZERS_PARALLELISM": "false",
           "TRL_EXPERIMENTAL_SILENCE": "1"}
    logs = LOGS / "gpu_training"
    logs.mkdir(parents=True, exist_ok=True)
    from training.stages import STAGES

    rows: list[dict] = []
    for stage in args.stages.split(","):
        failed = {r["stage"] for r in rows if r["exit"] != 0}
        if STAGES[stage].rl and failed & {"sft", "reward"}:  # an RL stage reads the SFT and reward runs
            rows.append({"stage": stage, "exit": None, "error": f"not run: {', '.join(sorted(failed))} failed"})
        else:
            rows.append(run_stage(stage, args, model, data, env, logs / f"{stage}.log"))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, ["stage", "exit", "wall_s", "peak_allocated_gib", "peak_reserved_gib"],
                title=f"{args.recipe} recipes, {args.shape} shape ({made['params_b']}B parameters, random weights)")
    peaks = [r["peak_reserved_gib"] for r in rows if r.get("peak_reserved_gib") is not None]
    payload = {"recipe": args.recipe, "shape": args.shape, "model": made, "steps": args.steps, "rows": args.rows,
               "stages": rows, "all_passed": all(r["exit"] == 0 for r in rows)}
    write_results("gpu_training", payload, max(peaks) / GPU_GIB if peaks else None, args.out)
    return payload


if __name__ == "__main__":
    main()
