"""Turn finished batch results into the two training datasets (TRL formats), with a manifest.

SFT (from critique results): conversational `messages` ending with the final revision, plus the
open reproduction's trace columns. Preferences (from preference results): `prompt, chosen,
rejected, margin, p_chosen, principles, position_consistency`; and the cheap variant from
critique results (chosen = final revision, rejected = initial answer). Written as JSONL and
Parquet (both load with `datasets.load_dataset`) and the seed project's CSV.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ucai.prompts import record_conversation, render_conversation
from ucai.schemas import ChatMessage


def _prompt_text(conversation: list[dict[str, str]]) -> str:
    return render_conversation([ChatMessage(**m) for m in conversation]) if len(conversation) > 1 \
        else conversation[0]["content"]


def _completed(records: dict[str, dict], results: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """(result line, input record, result) of every record that completed."""
    for line in results:
        if line["status"] == "completed":
            yield line, records[line["id"]], line["result"]


def sft_rows(records: dict[str, dict], results: list[dict], all_rounds: bool = False) -> list[dict]:
    """One row per prompt (the final revision), or one per round with `all_rounds` as in the paper."""
    rows = []
    for line, record, trace in _completed(records, results):
        conversation = record_conversation(record)
        steps = trace["revisions"] if all_rounds else trace["revisions"][-1:]
        for step in steps:
            answer_before = trace["initial_response"] if step["round"] == 1 else \
                trace["revisions"][step["round"] - 2]["revision"]
            rows.append({
                "id": line["id"] if not all_rounds else f"{line['id']}:{step['round']}",
                "source_id": line["id"], "source": record.get("source"),
                "prompt": _prompt_text(conversation),
                "messages": conversation + [{"role": "assistant", "content": step["revision"]}],
                "init_prompt": _prompt_text(conversation), "init_response": answer_before,
                "critic_prompt": step["critique_request"], "critic_response": step["critique"],
                "revision_prompt": step["revision_request"], "revision_response": step["revision"],
                "principle": step["principle"], "round": step["round"],
                "constitution": trace["constitution"], "constitution_hash": trace["constitution_hash"],
            })
    return rows


def revision_preference_rows(records: dict[str, dict], results: list[dict]) -> list[dict]:
    """The cheap variant of the open reproduction: chosen = final revision, rejected = initial answer."""
    return [{"id": row["source_id"], "source": row["source"], "prompt": row["prompt"],
             "chosen": row["revision_response"], "rejected": trace_initial, "margin": None, "p_chosen": None,
             "principles": [row["principle"]], "position_consistency": None, "constitution": row["constitution"],
             "constitution_hash": row["constitution_hash"]}
            for row, trace_initial in _with_initial(records, results)]


def _with_initial(records: dict[str, dict], results: list[dict]):
    initial = {line["id"]: line["result"]["initial_response"] for line in results if line["status"] == "completed"}
    for row in sft_rows(records, results):
        yield row, initial[row["source_id"]]


def preference_rows(records: dict[str, dict], results: list[dict]) -> list[dict]:
    rows = []
    for line, record, judged in _completed(records, results):
        if judged["chosen"].strip() == judged["rejected"].strip():  # identical answers: nothing to learn from
            continue
        produced = judged.get("produced_by") or {}
        rows.append({
            "id": line["id"], "source": record.get("source"), "prompt": _prompt_text(record_conversation(record)),
            "chosen": judged["chosen"], "rejected": judged["rejected"], "margin": judged["margin"],
            "p_chosen": judged["p_chosen"], "principles": judged["principles"],
            "position_consistency": judged["position_consistency"]["score"],
            "pairs": judged.get("pairs", "sample"), "label": judged.get("label", "judge"),
            "method": judged.get("method"), "chosen_from": produced.get("chosen", "sample"),
            "rejected_from": produced.get("rejected", "sample"),
            "constitution": judged["constitution"], "constitution_hash": judged["constitution_hash"],
        })
    return rows


def persona_sft_rows(records: dict[str, dict], results: list[dict]) -> list[dict]:
    """SFT without critique: the answer of the principle's follow persona (the chosen side of an RLCD pair)."""
    rows = []
    for line, record, pair in _completed(records, results):
        conversation = record_conversation(record)
        rows.append({
            "id": line["id"], "source_id": line["id"], "source": record.get("source"),
            "prompt": _prompt_text(conversation),
            "messages": conversation + [{"role": "assistant", "content": pair["chosen"]}],
            "response": pair["chosen"], "mode": "persona", "produced_by": pair["produced_by"]["chosen"],
            "principle": pair["principles"][0], "constitution": pair["constitution"],
            "constitution_hash": pair["constitution_hash"],
        })
    return rows


def write_dataset(rows: list[dict], out_dir: Path, name: str, manifest: dict[str, Any],
                  csv_columns: tuple[str, ...] | None = None) -> dict[str, Any]:
    """`name`.jsonl + `name`.parquet (+ `name`.csv) + `name`.manifest.json; returns the manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError(f"{name}: no rows to write (every record failed or was skipped)")
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / f"{name}.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), out_dir / f"{name}.parquet")
    if csv_columns:
        with (out_dir / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(csv_columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    full = {**manifest, "name": name, "rows": len(rows), "created_at": time.time(),
            "files": sorted(p.name for p in out_dir.glob(f"{name}.*") if not p.name.endswith(".manifest.json")),
            "sha256": hashlib.sha256(jsonl.read_bytes()).hexdigest()}
    (out_dir / f"{name}.manifest.json").write_text(json.dumps(full, indent=2))
    return full
