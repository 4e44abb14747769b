"""`ucai train STAGE …` = `python -m training STAGE --recipe … --constitution … --dataset … [--field value …]`.

`python -m training --list [rl]` prints the stage names (all, or the RL ones), for scripts and the Makefile.
"""
from __future__ import annotations

import sys

from training.stages import STAGES, resolve
from training.usage import usage


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--list":  # `--list`: every stage, in pipeline order; `--list rl`: the RL ones (make train-cpu)
        print(" ".join(s.name for s in STAGES.values() if argv[1:] != ["rl"] or s.rl))
        return 0
    try:
        stage, rest = resolve(argv[0], argv[1:])
    except KeyError as exc:
        print(f"{exc.args[0]}\n{usage()}", file=sys.stderr)
        return 2
    from training.common import build_parser
    from training.config import RecipeError
    from training.data import DatasetFormatError

    if "-h" in rest or "--help" in rest:
        build_parser(stage.name).print_help()
        return 0
    try:
        stage.run(rest)
    except (RecipeError, DatasetFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
