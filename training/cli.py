"""`python -m training <stage> --recipe … --constitution … --dataset … [--field value …]`."""
from __future__ import annotations

import importlib
import sys

from training.config import STAGES, RecipeError
from training.data import DatasetFormatError

USAGE = (f"usage: python -m training {{{'|'.join(STAGES)}}} --recipe NAME|PATH --constitution ethical|unethical "
         "--dataset PATH [--algo ppo|rloo|grpo (ppo only)] [--field value ...]")
ALIASES = {"rloo": ("ppo", ["--algo", "rloo"]), "grpo": ("ppo", ["--algo", "grpo"])}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage in ALIASES:  # `ucai train grpo …` = `ucai train ppo --algo grpo …`
        stage, extra = ALIASES[stage]
        rest = extra + rest
    if stage not in STAGES:
        print(f"unknown stage {stage!r}\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"training.{stage}")
    try:
        module.main(rest)
    except (RecipeError, DatasetFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
