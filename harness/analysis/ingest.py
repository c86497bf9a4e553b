"""Ingest: walk result folders and foreign benchmark files into the tidy sample table.

Files are recognised by content (the extension is only a hint): our run.json records and our own
exports (tidy CSV / Parquet, carried rows), llama.cpp `llama-bench` output (json/jsonl/csv/sql,
read by `formats.llamabench`), pytest-benchmark JSON, Ollama API responses and `--verbose` text,
llama-server responses, vLLM / GuideLLM / AIPerf / optimum-benchmark results (`formats/`), and any
table or JSON document read by what its columns mean (`columns`, `bymeaning`). Every file found
gets a `FileReport`: recognised (with its row, failure, aggregate and rejection counts and a note
on how it was read), "skipped" (with the reason it was not read) or "unrecognised".

The steps, one module each: `files` (safe walking and reading: symlinks never followed, files
opened with O_NOFOLLOW and read only up to a size limit, JSON nesting capped before parsing,
nothing unpickled, evaluated or loaded as YAML), `detect` (the format by content, and the reader
that turns it into a `reading.Reading`), `normalise` (implausible values dropped with a warning;
junk made failed rows), `offload` (num_gpu as the layers actually offloaded). A bad file never
stops the ingest.

Junk is not data: a row that carries an error, or whose metrics are all zero or empty, becomes a
failed row with its metrics missing, so it is counted as a failure and never averaged as 0. Nor is
an absurd value (1e308 tok/s, a negative duration, inf): it is dropped and `IngestResult.warnings`
says so; `FileReport.n_rejected` counts the rows that lost a value that way.

Aggregates are not samples: values a file states about requests it does not list (means, p95s,
totals of n requests) go to `IngestResult.aggregates`, one row per claimed value, and never into
the sample table, its statistics or its tests.

Large files stream: rows are taken CHUNK_ROWS at a time into typed frames, so memory grows with
the table, not with the file's text or per-row Python objects.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from . import detect, files, offload, table
from .files import (DERIVED_DIRS, DERIVED_FILES, DERIVED_OUTPUT_DIRS, MAX_FILE_BYTES,  # noqa: F401 (public here too)
                    MAX_JSON_DEPTH, TMP_PREFIX, Skip)
from .normalise import Normaliser
from .reading import check_aggregates

#: Rows turned into a typed frame at a time (bounds the per-row Python objects alive at once).
CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class FileReport:
    """What ingest did with one path: `kind` is a source_format, "skipped" or "unrecognised"."""

    path: str  # relative to the root it was found under (posix); the file name for a file root
    kind: str
    n_rows: int = 0
    n_failed: int = 0
    reason: str | None = None  # why it was skipped / not recognised, or why it holds no usable sample
    mtime: str | None = None  # ISO 8601, UTC
    root: str = ""  # the root as given
    note: str | None = None  # facts about a recognised file (pre-averaged values, dropped lines)
    n_aggregates: int = 0  # values claimed about requests the file does not list (not samples)
    n_rejected: int = 0  # rows that lost an implausible value (see IngestResult.warnings)

    @property
    def recognised(self) -> bool:
        return self.kind not in ("skipped", "unrecognised")


@dataclass(frozen=True, eq=False)
class IngestResult:
    frame: Any  # pandas DataFrame with table.COLUMNS
    files: list[FileReport]
    #: Values dropped as not measurements (normalise), one line per file, metric and reason.
    warnings: list[str] = field(default_factory=list)
    #: Pre-aggregated values (table.AGGREGATE_COLUMNS), one row per claimed value; never samples.
    aggregates: Any = None
    #: How foreign offload values were read: one line per model whose layer count is known,
    #: naming the source's offload parameter and the requested values that are one configuration.
    offload: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one ok sample was read."""
        return bool((self.frame["status"] == "ok").any()) if len(self.frame) else False

    def summary(self) -> dict:
        """Counts by kind, recognised / unrecognised / skipped files (with reasons), row counts, the
        warnings (values dropped as implausible), and the latest modification time of the
        recognised (data) files."""
        rec = [f for f in self.files if f.recognised]
        skipped = [f for f in self.files if f.kind == "skipped"]
        unrec = [f for f in self.files if f.kind == "unrecognised"]
        n_failed = int((self.frame["status"] == "failed").sum()) if len(self.frame) else 0
        aggs = self.aggregates if self.aggregates is not None else ()
        mtimes = [f.mtime for f in rec if f.mtime]
        return {
            "n_files": len(self.files),
            "by_kind": dict(Counter(f.kind for f in rec)),
            "recognised": len(rec),
            "unrecognised": len(unrec),
            "skipped": len(skipped),
            "skipped_files": [{"path": f.path, "reason": f.reason} for f in skipped],
            "skipped_by_reason": dict(Counter(f.reason for f in skipped)),
            "unrecognised_files": [{"path": f.path, "reason": f.reason} for f in unrec],
            "without_ok_samples": [{"path": f.path, "kind": f.kind, "reason": f.reason}
                                   for f in rec if f.n_rows == f.n_failed],
            "notes": [{"path": f.path, "kind": f.kind, "note": f.note} for f in self.files if f.note],
            "warnings": list(self.warnings),
            "aggregates": len(aggs),
            "files_with_aggregates": sum(1 for f in rec if f.n_aggregates),
            "rejected_rows": sum(f.n_rejected for f in rec),
            "offload": list(self.offload),
            "rows": len(self.frame),
            "ok_rows": len(self.frame) - n_failed,
            "failed_rows": n_failed,
            "latest_mtime": max(mtimes, key=datetime.fromisoformat) if mtimes else None,
        }


def ingest(paths: Iterable[str | os.PathLike], *, max_file_bytes: int = MAX_FILE_BYTES,
           model_layers: dict | None = None) -> IngestResult:
    """Read every recognisable file under `paths` (files or folders, walked recursively without
    following symlinks) into one tidy sample table and the table of aggregates; files larger than
    `max_file_bytes` are skipped unread. `model_layers` ({model or None: offloadable layers}, see
    `offload`) makes foreign offload values at or above a model's layer count one configuration.
    Never raises for a bad file: its FileReport says why it was skipped."""
    import pandas as pd

    chunks: list = []
    aggregates: list[dict] = []
    reports: list[FileReport] = []
    warnings: list[str] = []
    seen_files: set[tuple[int, int]] = set()
    for root in paths:
        root_s = os.fspath(root)
        for fpath, rel, st, skip in files.walk(root_s):
            mtime = files.iso(st.st_mtime) if st is not None else None
            if skip is not None:
                reports.append(FileReport(rel, "skipped", reason=skip, mtime=mtime, root=root_s))
                continue
            if (st.st_dev, st.st_ino) in seen_files:
                reports.append(FileReport(rel, "skipped", reason="already read under another root",
                                          mtime=mtime, root=root_s))
                continue
            seen_files.add((st.st_dev, st.st_ino))
            norm = Normaliser(rel)
            file_chunks: list = []
            n_rows = n_failed = 0
            try:
                reading = detect.read_file(fpath, rel, st, max_file_bytes)
                buf: list[dict] = []
                for row in reading.rows:
                    buf.append(row)
                    if len(buf) >= CHUNK_ROWS:
                        n_rows, n_failed = _take(buf, norm, file_chunks, n_rows, n_failed)
                        buf = []
                n_rows, n_failed = _take(buf, norm, file_chunks, n_rows, n_failed)
                file_aggs, agg_warnings = check_aggregates(reading.aggregates, rel)
            except Skip as s:
                reports.append(FileReport(rel, s.kind, reason=s.reason, mtime=mtime, root=root_s))
                continue
            except UnicodeDecodeError as e:  # a streamed file that stops being UTF-8 part way
                reports.append(FileReport(rel, "skipped", reason=f"not UTF-8 (invalid byte: {e.reason})",
                                          mtime=mtime, root=root_s))
                continue
            except csv.Error as e:
                reports.append(FileReport(rel, "skipped", reason=f"malformed CSV ({e})", mtime=mtime, root=root_s))
                continue
            except Exception as e:  # noqa: BLE001 - the per-file boundary: record why, go on
                reports.append(FileReport(rel, "skipped", reason=f"could not read: {type(e).__name__}: {e}",
                                          mtime=mtime, root=root_s))
                continue
            fmt, note = reading.fmt, reading.note()
            warnings.extend(norm.warnings())
            warnings.extend(agg_warnings)
            if not n_rows and not file_aggs:
                reports.append(FileReport(rel, "skipped", reason=f"{fmt}: no data rows", mtime=mtime,
                                          root=root_s, note=note))
                continue
            reason = None
            if n_rows and n_failed == n_rows and not file_aggs:
                reason = f"all {n_failed} rows failed (no usable samples)"
            chunks.extend(file_chunks)
            aggregates.extend(file_aggs)
            reports.append(FileReport(rel, fmt, n_rows, n_failed, reason, mtime, root_s, note,
                                      n_aggregates=len(file_aggs), n_rejected=norm.n_rejected))
    frame = table.concat(chunks)
    agg = pd.DataFrame(aggregates, columns=list(table.AGGREGATE_COLUMNS))
    offload_lines = apply_offload(frame, agg, model_layers or {})
    return IngestResult(frame=frame, files=reports, warnings=warnings, aggregates=agg, offload=offload_lines)


def _take(buf: list[dict], norm: Normaliser, out: list, n_rows: int, n_failed: int) -> tuple[int, int]:
    """Normalise a chunk of rows and keep it as a typed frame; returns the file's running counts."""
    if not buf:
        return n_rows, n_failed
    norm.apply(buf)
    out.append(table.frame(buf))
    return n_rows + len(buf), n_failed + sum(1 for r in buf if r["status"] == "failed")


def apply_offload(frame, agg, given: dict) -> list[str]:
    """Set n_gpu_layers_effective of foreign rows (sample and aggregate tables, in place) whose
    model's offloadable layer count is known (`offload`); one line per such model of the sample
    table, saying which requested values became one configuration."""
    import pandas as pd

    lines = []
    for df in (frame, agg):
        if not len(df):
            continue
        todo = df["n_gpu_layers"].notna() & df["n_gpu_layers_effective"].isna() & (df["source_format"] != "harness")
        if not todo.any():
            continue
        models = df.loc[todo, "model"].astype(object).where(df.loc[todo, "model"].notna(), None)
        known = offload.offloadable(set(models), given)
        for m, (layers, source) in known.items():
            sel = todo & ((df["model"] == m).fillna(False) if m is not None else df["model"].isna())
            req = df.loc[sel, "n_gpu_layers"].astype(object)
            eff = req.map(lambda v: offload.effective(v, layers))
            df.loc[sel, "n_gpu_layers_effective"] = pd.to_numeric(eff, errors="coerce").astype("float64")
            if df is not frame:
                continue
            at_max = sorted({str(v) for v, e in zip(req, eff) if e == layers}, key=_num_key)
            params = sorted({str(p) for p in df.loc[sel, "offload_param"].dropna()}) or ["n_gpu_layers"]
            if len(at_max) > 1:
                lines.append(f"{'/'.join(params)} {', '.join(at_max)} on {m or 'the model'}: one configuration "
                             f"(all {layers} offloadable layers; layer count {source})")
            else:
                lines.append(f"{'/'.join(params)} on {m or 'the model'}: {layers} offloadable layers (layer count "
                             f"{source}); no two requested values are the same configuration")
    return lines


def _num_key(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)
