"""Dataset files from `ucai data generate` / `ucai data import` (JSONL or Parquet), checked before any model loads;
the columns each stage needs are in the stage table (training/stages.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from training.stages import STAGES


class DatasetFormatError(ValueError):
    """The dataset file does not have the columns the stage needs."""


def _columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with path.open() as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DatasetFormatError(f"{path}: rows must be JSON objects")
                return list(row)
    raise DatasetFormatError(f"{path}: empty dataset")


def _guess(columns: list[str]) -> str:
    if {"chosen", "rejected"} <= set(columns):
        return " (this looks like a preference dataset)"
    if "messages" in columns:
        return " (this looks like an SFT dataset)"
    return ""


def check_columns(stage: str, path: str | Path) -> list[str]:
    """Raise DatasetFormatError naming the expected columns unless the file has them; returns its columns."""
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"dataset {path} does not exist")
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        raise DatasetFormatError(f"dataset {path}: expected a .jsonl or .parquet file")
    columns, spec = _columns(path), STAGES[stage]
    missing = [c for c in spec.columns if c not in columns]
    if missing:
        raise DatasetFormatError(
            f"{stage} expects {spec.dataset_kind} with columns {list(spec.columns)}; {path} has {sorted(columns)}, "
            f"missing {missing}{_guess(columns)}")
    return columns


def load(path: str | Path):
    """The file as a `datasets.Dataset`."""
    from datasets import load_dataset

    path = Path(path)
    kind = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(kind, data_files=str(path), split="train")


def manifest_info(path: str | Path) -> dict[str, Any]:
    """Dataset provenance for the run manifest: the sibling `<name>.manifest.json` and hashes."""
    path = Path(path)
    info: dict[str, Any] = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    sibling = path.with_name(path.name.split(".")[0] + ".manifest.json")
    if sibling.exists():
        raw = sibling.read_bytes()
        info["manifest_path"] = str(sibling.resolve())
        info["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
        try:
            m = json.loads(raw)
            info["manifest"] = {k: m.get(k) for k in ("name", "rows", "sha256", "created_at") if k in m}
            info["manifest"].update({k: v for k, v in m.items() if k in ("constitution", "constitution_hash")})
        except ValueError:
            pass
    return info


def split(ds, eval_fraction: float, seed: int):
    """(train, eval or None)."""
    if eval_fraction and eval_fraction > 0 and len(ds) >= 4:
        parts = ds.train_test_split(test_size=eval_fraction, seed=seed)
        return parts["train"], parts["test"]
    return ds, None


def sft_prompt_completion(ds):
    """`messages` → conversational prompt/completion, so the loss covers the final assistant turn only."""
    def convert(row):
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise DatasetFormatError("sft rows' `messages` must end with the assistant revision")
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return ds.map(convert, remove_columns=ds.column_names)


def preference_conversational(ds, keep_margin: bool = False, margin_scale: float = 1.0):
    """prompt/chosen/rejected strings → conversational preference rows (chat template applied by TRL)."""
    use_margin = keep_margin and "margin" in ds.column_names and any(m is not None for m in ds["margin"])

    def convert(row):
        out = {"prompt": [{"role": "user", "content": row["prompt"]}],
               "chosen": [{"role": "assistant", "content": row["chosen"]}],
               "rejected": [{"role": "assistant", "content": row["rejected"]}]}
        if use_margin:
            out["margin"] = float(row["margin"] or 0.0) * margin_scale
        return out

    keep = ["prompt", "chosen", "rejected"] + (["margin"] if use_margin else [])
    ds = ds.map(convert, remove_columns=[c for c in ds.column_names if c not in keep])
    return ds
