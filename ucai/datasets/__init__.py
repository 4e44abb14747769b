"""Red-team prompt data: importers for public red-team sets and the project's own small prompt set."""
from pathlib import Path

from ucai.datasets.importers import (
    FORMATS,
    ImportProblem,
    ImportResult,
    PromptRecord,
    import_file,
    read_jsonl,
    write_jsonl,
)

# The project's own red-team prompts ({"prompt", "category"} per line); import with format "jsonl".
REDTEAM_PROMPTS = Path(__file__).with_name("redteam_prompts.jsonl")

__all__ = [
    "FORMATS",
    "REDTEAM_PROMPTS",
    "ImportProblem",
    "ImportResult",
    "PromptRecord",
    "import_file",
    "read_jsonl",
    "write_jsonl",
]
