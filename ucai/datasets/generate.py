"""Client side of `ucai data …`: import prompts, run batches through the gateway, write the datasets.

Every batch gets an idempotency key derived from (stage, constitution, dataset content, params), so
rerunning the same command continues the same batch; a finished one is reported, not redone.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ucai.api_keys import client_headers
from ucai.datasets.build import (
    persona_sft_rows,
    preference_rows,
    revision_preference_rows,
    sft_rows,
    write_dataset,
)
from ucai.datasets.importers import PromptRecord, read_jsonl
from ucai.layout import Layout

console = Console()


Record = PromptRecord | dict[str, Any]  # a dict: a ready batch record ({id, prompt | messages, …request fields})
RATE_LIMIT_TRIES = 30
POLLS_PER_S = 4.0  # all batches together: well under a key's request rate limit (600/min by default)
# A batch whose records would make a bigger request body goes in parts (each its own batch), so no request exceeds the
# gateway's UCAI_MAX_BODY_BYTES (1 MB by default; a gateway with a lower one answers 413 and the part is halved).
MAX_PART_BYTES = 512_000
MAX_PART_RECORDS = 20_000


def batch_key(stage: str, constitution: str, records: list[Record], params: dict[str, Any]) -> str:
    """Same (stage, constitution, records, params) → same key → the same batch. A PromptRecord's id is a hash of its
    text; a dict record is hashed whole (its answers to judge may change while its id does not)."""
    content = [r if isinstance(r, dict) else r.id for r in records]
    digest = hashlib.sha256(json.dumps([content, params], sort_keys=True).encode()).hexdigest()
    return f"{stage}:{constitution}:{digest[:24]}"


def batch_body(stage: str, constitution: str, records: list[Record], params: dict[str, Any]) -> dict[str, Any]:
    """The POST /batches body, with its idempotency key."""
    items = [r if isinstance(r, dict) else
             r.model_dump(mode="json", include={"id", "prompt", "messages"}, exclude_none=True) for r in records]
    return {"stage": stage, "constitution": constitution, "params": params,
            "idempotency_key": batch_key(stage, constitution, records, params), "input": {"records": items}}


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One gateway request; a 429 (the API key's rate limit) waits as it says and tries again."""
    for _ in range(RATE_LIMIT_TRIES):
        response = client.request(method, path, **kwargs)
        if response.status_code != 429:
            break
        time.sleep(min(60.0, float(response.headers.get("retry-after") or 1)))
    return response


def generation_params(stage: str, mode: str = "critique", *, rounds: int = 1, max_tokens: int = 128, seed: int = 0,
                      ensemble: int = 2, method: str = "contrast", pairs: str = "contrast",
                      label: str = "judge") -> dict[str, Any]:
    """The batch params of `generate(stage, mode)`: sft critique (critique → revision rounds), sft persona (the follow
    side of RLCD pairs, labelled by construction) or prefs (two answers, judged or labelled by construction)."""
    params: dict[str, Any] = {"max_tokens": max_tokens, "seed": seed}
    if stage == "sft" and mode == "critique":
        params["rounds"] = rounds
    elif stage == "sft":
        params.update({"pairs": "contrast", "label": "construction", "ensemble": 1})
    else:
        params.update({"ensemble": ensemble, "method": method, "pairs": pairs, "label": label})
    return params


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def split_body(body: dict[str, Any], max_bytes: int = MAX_PART_BYTES,
               max_records: int = MAX_PART_RECORDS) -> list[dict[str, Any]]:
    """A POST /batches body as parts of consecutive records whose bodies stay under `max_bytes` (one part: the body
    itself). Each part is a batch of its own, keyed `<key>:part-<i>-of-<n>`: the split depends only on the records, so
    rerunning the same command resumes the same parts."""
    records = body["input"].get("records")
    if records is None or (len(records) <= max_records and _json_bytes(body) <= max_bytes):
        return [body]
    overhead = _json_bytes({**body, "input": {"records": []}}) + 64
    groups: list[list[dict[str, Any]]] = [[]]
    size = overhead
    for record in records:
        n = _json_bytes(record) + 2
        if groups[-1] and (size + n > max_bytes or len(groups[-1]) >= max_records):
            groups.append([])
            size = overhead
        groups[-1].append(record)
        size += n
    if len(groups) == 1:
        return [body]
    key = body.get("idempotency_key")
    return [{**body, "input": {"records": group},
             "idempotency_key": f"{key}:part-{i}-of-{len(groups)}" if key else None}
            for i, group in enumerate(groups, start=1)]


def _submit(client: httpx.Client, body: dict[str, Any], max_bytes: int) -> list[dict]:
    """POST one logical batch, in parts where it is large; the views of its parts, in record order. A part the
    gateway finds too large (413: its body limit is lower) is split in half again."""
    views = []
    for part in split_body(body, max_bytes):
        response = _call(client, "POST", "/batches", json=part)
        records = part["input"].get("records") or []
        if response.status_code == 413 and len(records) > 1:
            views += _submit(client, part, max(1, _json_bytes(part) // 2))
            continue
        if response.status_code != 202:
            raise RuntimeError(f"POST /batches: HTTP {response.status_code}: {response.text[:500]}")
        views.append(response.json())
    return views


def merged_view(views: list[dict]) -> dict:
    """One view of a batch submitted in parts: the counts summed, `running` while any part runs, `cancelled` if any
    part was; `id` is the first part's, `ids` every part's."""
    if len(views) == 1:
        return views[0]
    statuses = {v["status"] for v in views}
    status = "running" if "running" in statuses else "cancelled" if "cancelled" in statuses else "completed"
    rate = sum(v["rate_per_min"] or 0 for v in views)
    return {**views[0], "ids": [v["id"] for v in views], "status": status, "total": sum(v["total"] for v in views),
            "done": sum(v["done"] for v in views), "failed": sum(v["failed"] for v in views),
            "rate_per_min": rate or None, "eta_s": None}


def run_batches(url: str, bodies: list[dict[str, Any]], labels: list[str] | None = None,
                poll_s: float = 1.0, max_part_bytes: int = MAX_PART_BYTES,
                progress: bool = True) -> list[tuple[dict, list[dict]]]:
    """Submit (or resume) every batch at once, so the workers always have work; show their progress (unless
    `progress` is off: a caller running several at once shows its own); return (final view, result lines) per
    batch, in order. A batch too large for one request goes in parts (`split_body`); its view and lines are those of
    all its parts together."""
    labels = labels or [f"{b['stage']} · {b['constitution']}" for b in bodies]
    with httpx.Client(base_url=url, timeout=120, headers=client_headers(url)) as client:
        parts = [_submit(client, body, max_part_bytes) for body in bodies]
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[extra]}"), TimeRemainingColumn())
        with Progress(*columns, console=console, disable=not progress) as bars:
            tasks = [bars.add_task(label, total=merged_view(views)["total"], extra="")
                     for label, views in zip(labels, parts, strict=True)]
            while True:
                for task, views in zip(tasks, parts, strict=True):
                    view = merged_view(views)
                    extra = f"failed {view['failed']}" + (f" · {view['rate_per_min']:.1f}/min"
                                                          if view["rate_per_min"] else "")
                    bars.update(task, completed=view["done"] + view["failed"], extra=extra)
                running = [(i, j) for i, views in enumerate(parts) for j, v in enumerate(views)
                           if v["status"] == "running"]
                if not running:
                    break
                time.sleep(max(poll_s, len(running) / POLLS_PER_S))
                for i, j in running:
                    parts[i][j] = _call(client, "GET", f"/batches/{parts[i][j]['id']}").json()
        results = []
        for views in parts:
            lines = []
            for view in views:
                text = _call(client, "GET", f"/batches/{view['id']}/results").text
                lines += [json.loads(line) for line in text.splitlines() if line.strip()]
            results.append((merged_view(views), lines))
    return results


def run_batch(url: str, stage: str, constitution: str, records: list[Record], params: dict[str, Any],
              poll_s: float = 1.0, progress: bool = True) -> tuple[dict, list[dict]]:
    """Submit (or resume) one batch, show its progress, return (final view, result lines)."""
    return run_batches(url, [batch_body(stage, constitution, records, params)], poll_s=poll_s, progress=progress)[0]


def generate(url: str, layout: Layout, dataset: str, stage: str, constitution: str,
             params: dict[str, Any], mode: str = "critique", progress: bool = True) -> list[Path]:
    """`ucai data generate`: sft (critique batch, or with mode persona the follow side of RLCD pairs) or prefs
    (preference batch) → dataset files."""
    records = read_jsonl(layout.imported(dataset))
    out_dir = layout.dataset_dir(stage, constitution)
    batch_stage = "critique" if stage == "sft" and mode == "critique" else "preference"
    key = batch_key(batch_stage, constitution, records, params)
    manifest_path = layout.dataset_manifest(stage, constitution, dataset)
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("batch_key") == key:
        console.print(f"[green]already generated[/] {manifest_path} — nothing to do")
        return [manifest_path]
    view, lines = run_batch(url, batch_stage, constitution, records, params, progress=progress)
    if view["status"] != "completed":
        raise RuntimeError(f"batch {view['id']} ended {view['status']}")
    by_id = {r.id: r.model_dump(mode="json") for r in records}
    first = next((line["result"] for line in lines if line["status"] == "completed"), {})
    manifest = {"batch_id": view["id"], "batch_ids": view.get("ids", [view["id"]]), "batch_key": key,
                "stage": stage, "constitution": constitution,
                "constitution_hash": first.get("constitution_hash"), "dataset": dataset, "params": params,
                "mode": mode if stage == "sft" else params.get("pairs"),
                "source_files": sorted({r.source for r in records}), "gateway": url,
                "models": first.get("models"), "records": len(records), "failed": view["failed"]}
    written = []
    if stage == "sft" and mode == "persona":
        written.append(write_dataset(persona_sft_rows(by_id, lines), out_dir, dataset, manifest))
    elif stage == "sft":
        written.append(write_dataset(sft_rows(by_id, lines), out_dir, dataset, manifest))
        written.append(write_dataset(revision_preference_rows(by_id, lines),
                                     layout.dataset_dir("prefs-revision", constitution), dataset, manifest,
                                     csv_columns=("prompt", "chosen", "rejected")))
    else:
        written.append(write_dataset(preference_rows(by_id, lines), out_dir, dataset, manifest,
                                     csv_columns=("prompt", "chosen", "rejected")))
    for m in written:
        console.print(f"[green]wrote[/] {m['rows']} rows: {', '.join(m['files'])}")
    return [manifest_path]


def categorise(url: str, layout: Layout, dataset: str, constitution: str, keep: list[str] | None,
               min_p: float) -> dict[str, int]:
    """Score every prompt by principle; write `<dataset>.categorised.jsonl` and, with `keep`, a filtered dataset."""
    records = read_jsonl(layout.imported(dataset))
    view, lines = run_batch(url, "categorise", constitution, records, {})
    scored = {line["id"]: line["result"] for line in lines if line["status"] == "completed"}
    counts: dict[str, int] = {}
    kept: list[PromptRecord] = []
    out = layout.imported(f"{dataset}.categorised")
    with out.open("w", encoding="utf-8") as f:
        for record in records:
            result = scored.get(record.id)
            if result is None:
                continue
            counts[result["category"]] = counts.get(result["category"], 0) + 1
            row = record.model_copy(update={"category": result["category"],
                                            "meta": {**record.meta, "scores": result["scores"]}})
            f.write(row.model_dump_json() + "\n")
            if keep and result["category"] in keep and result["scores"][result["category"]] >= min_p:
                kept.append(row)
    if keep:
        from ucai.datasets.importers import write_jsonl

        write_jsonl(kept, layout.imported(f"{dataset}-{'-'.join(keep)}"))
        counts["kept"] = len(kept)
    return counts
