"""Sweep-level files, always rebuilt from the job folders (so concurrent or resumed jobs never
corrupt a shared index): sweep.json, runs.csv and runs.parquet (one row per run)."""

from __future__ import annotations

import getpass
import platform
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from . import fields, store

SWEEP_SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def mark_started(sweep_dir: Path, overrides: list[str]) -> None:
    """Record that an invocation started on this sweep (a resume keeps the first start time)."""
    prev = _read(sweep_dir)
    meta = {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "sweep_name": sweep_dir.name,
        "state": "running",
        "first_started_at": prev.get("first_started_at") or _now(),
        "started_at": _now(),
        "ended_at": None,
        "command": sys.argv,
        "overrides": overrides,
        "host": platform.node(),
        "user": _user(),
        "invocations": int(prev.get("invocations") or 0) + 1,
    }
    store.write_json(sweep_dir / store.SWEEP_FILE, {**prev, **meta})


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _read(sweep_dir: Path) -> dict:
    import json

    try:
        d = json.loads((sweep_dir / store.SWEEP_FILE).read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def rebuild(sweep_dir: Path, state: str = "complete", last_invocation: dict | None = None) -> list[dict]:
    """Rebuild sweep.json, runs.csv and runs.parquet from the job folders. Returns the rows.

    `status_counts` counts the records on disk (a resumed point keeps its ok record);
    `last_invocation` is what the latest command did (ok, failed, skipped)."""
    records = [r for d in store.job_dirs(sweep_dir) if (r := store.read_run(d))]
    records.sort(key=lambda r: (str(r.get("started_at")), str(r.get("job_name"))))  # launch order
    rows = [fields.row(r) for r in records]
    counts = Counter(r.get("status") for r in records)
    groups: dict[str, list[str]] = defaultdict(list)
    for r in records:
        eid = (r.get("effective") or {}).get("effective_id")
        if eid:
            groups[eid].append(r.get("job_name"))
    equivalent = [sorted(v) for v in groups.values() if len(v) > 1]
    for row in rows:
        row["equivalent_to"] = ";".join(
            j for g in equivalent if row["job"] in g for j in g if j != row["job"]) or None
    meta = _read(sweep_dir)
    meta.update(
        schema_version=SWEEP_SCHEMA_VERSION, sweep_name=sweep_dir.name, state=state,
        ended_at=_now() if state != "running" else None,
        status_counts={k: counts.get(k, 0) for k in ("ok", "failed", "skipped")},
        n_runs=len(records),
        last_invocation={k: int((last_invocation or {}).get(k, 0)) for k in ("ok", "failed", "skipped")},
        jobs=[{"job": r.get("job_name"), "status": r.get("status"),
               "effective_id": (r.get("effective") or {}).get("effective_id"),
               "error": (r.get("error") or {}).get("message")} for r in records],
        equivalent_groups=equivalent,
    )
    store.write_json(sweep_dir / store.SWEEP_FILE, meta)
    if rows:
        _write_tables(sweep_dir, rows)
    return rows


def _write_tables(sweep_dir: Path, rows: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows, columns=[f.name for f in fields.FIELDS] + ["equivalent_to"])
    store.atomic_write_text(sweep_dir / "runs.csv", df.to_csv(index=False))
    # Mixed-type config columns (n_gpu_layers: "all" or 12) are stored as text in Parquet.
    for c in df.columns:
        if df[c].map(type).nunique() > 1:
            df[c] = df[c].map(lambda v: None if v is None else str(v))
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    store.atomic_write_bytes(sweep_dir / "runs.parquet", buf.getvalue())
