"""Ingest: walk result folders and foreign benchmark files into the tidy sample table.

Files are recognised by content (the extension is only a hint): our run.json records, llama.cpp
`llama-bench` output (json/jsonl/csv/sql, read by `formats.llamabench`), pytest-benchmark JSON,
and the CSVs and API responses of Ollama-style tools. Every file found gets a `FileReport`:
recognised (with its row counts), "skipped" (with the reason it was not read) or "unrecognised".

The steps, one module each: `files` (safe walking and reading: symlinks never followed, files
opened with O_NOFOLLOW and read only up to a size limit, JSON nesting capped before parsing,
nothing unpickled, evaluated or loaded as YAML), `detect` (the format by content, and the reader
that turns it into rows: `foreign`, `formats.llamabench`, `table.rows_from_record`), `normalise`
(implausible values dropped with a warning; junk made failed rows). A bad file never stops the
ingest.

Junk is not data: a row that carries an error, or whose metrics are all zero or empty, becomes a
failed row with its metrics missing, so it is counted as a failure and never averaged as 0. Nor is
an absurd value (1e308 tok/s, a negative duration, inf): it is dropped and `IngestResult.warnings`
says so.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from . import detect, files, table
from .files import (DERIVED_DIRS, DERIVED_FILES, DERIVED_OUTPUT_DIRS, MAX_FILE_BYTES,  # noqa: F401 (public here too)
                    MAX_JSON_DEPTH, TMP_PREFIX, Skip)
from .normalise import normalise


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

    @property
    def recognised(self) -> bool:
        return self.kind not in ("skipped", "unrecognised")


@dataclass(frozen=True, eq=False)
class IngestResult:
    frame: Any  # pandas DataFrame with table.COLUMNS
    files: list[FileReport]
    #: Values dropped as not measurements (normalise), one line per file, metric and reason.
    warnings: list[str] = field(default_factory=list)

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
            "rows": len(self.frame),
            "ok_rows": len(self.frame) - n_failed,
            "failed_rows": n_failed,
            "latest_mtime": max(mtimes, key=datetime.fromisoformat) if mtimes else None,
        }


def ingest(paths: Iterable[str | os.PathLike], *, max_file_bytes: int = MAX_FILE_BYTES) -> IngestResult:
    """Read every recognisable file under `paths` (files or folders, walked recursively without
    following symlinks) into one tidy sample table; files larger than `max_file_bytes` are skipped
    unread. Never raises for a bad file: its FileReport says why it was skipped."""
    rows: list[dict] = []
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
            try:
                fmt, file_rows, note = detect.read_file(fpath, rel, st, max_file_bytes)
            except Skip as s:
                reports.append(FileReport(rel, s.kind, reason=s.reason, mtime=mtime, root=root_s))
                continue
            except Exception as e:  # noqa: BLE001 - the per-file boundary: record why, go on
                reports.append(FileReport(rel, "skipped", reason=f"could not read: {type(e).__name__}: {e}",
                                          mtime=mtime, root=root_s))
                continue
            file_rows, file_warnings = normalise(file_rows, rel)
            warnings.extend(file_warnings)
            n_failed = sum(1 for r in file_rows if r["status"] == "failed")
            reason = None
            if not file_rows:
                reports.append(FileReport(rel, "skipped", reason=f"{fmt}: no data rows", mtime=mtime,
                                          root=root_s, note=note))
                continue
            if n_failed == len(file_rows):
                reason = f"all {n_failed} rows failed (no usable samples)"
            rows.extend(file_rows)
            reports.append(FileReport(rel, fmt, len(file_rows), n_failed, reason, mtime, root_s, note))
    return IngestResult(frame=table.frame(rows), files=reports, warnings=warnings)
