"""Ingest: walk result folders and foreign benchmark files into the tidy sample table.

Files are recognised by content (the extension is only a hint): our run.json records, llama.cpp
`llama-bench` output (json/jsonl/csv/sql, read by `formats.llamabench`), pytest-benchmark JSON,
and the CSVs and API responses of Ollama-style tools. Every file found gets a `FileReport`:
recognised (with its row counts), "skipped" (with the reason it was not read) or "unrecognised".

Safety: symlinks are never followed (the walk cannot leave the given roots or loop), files are
opened with O_NOFOLLOW and read only up to a size limit, JSON nesting is capped before parsing,
and nothing is ever unpickled, evaluated or loaded as YAML. A bad file never stops the ingest.

Junk is not data: a row that carries an error, or whose metrics are all zero or empty, becomes a
failed row with its metrics missing, so it is counted as a failure and never averaged as 0.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import importlib
import io
import json
import math
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from ..record import SCHEMA_VERSION
from . import table

MAX_FILE_BYTES = 200 * 2**20
MAX_JSON_DEPTH = 64
DERIVED_FILES = frozenset({"runs.csv", "runs.parquet", "sweep.json", "multirun.yaml", "tokens.csv",
                           "telemetry.csv", "engine_load.log", "run.log"})
DERIVED_DIRS = frozenset({".hydra"})
TMP_PREFIX = ".tmp-"
PROMPT_LABEL_CHARS = 80

_JSON_EXTS = frozenset({".json", ".jsonl", ".ndjson"})
_PARAM_ALIASES = {"num_gpu": "n_gpu_layers", "num_ctx": "n_ctx", "ngl": "n_gpu_layers"}
_NO_ERROR = frozenset({"", "none", "nan", "null"})
_OLLAMA_API_KEYS = frozenset({"total_duration", "eval_count", "eval_duration"})
_OLLAMA_CSV = {
    ("prompt", "ttft_s", "tokens_s", "load_s", "prompt_eval_s", "eval_s", "eval_count", "response_chars",
     "error"): "ollama-calls",
    ("num_gpu", "num_ctx", "temperature", "config_name", "ttft_s", "tokens_s", "load_s", "prompt_eval_s", "eval_s",
     "eval_count", "error"): "ollama-config-calls",
    ("config_name", "num_gpu", "num_ctx", "temperature", "mean_tokens_s", "mean_ttft_s", "mean_load_s"):
        "ollama-summary",
}
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


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

    @property
    def ok(self) -> bool:
        """True when at least one ok sample was read."""
        return bool((self.frame["status"] == "ok").any()) if len(self.frame) else False

    def summary(self) -> dict:
        """Counts by kind, recognised / unrecognised / skipped files (with reasons), row counts, and
        the latest modification time of the recognised (data) files."""
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
            "rows": len(self.frame),
            "ok_rows": len(self.frame) - n_failed,
            "failed_rows": n_failed,
            "latest_mtime": max(mtimes, key=datetime.fromisoformat) if mtimes else None,
        }


class _Skip(Exception):
    """A file is not read, for the reason given; `kind` is "skipped" or "unrecognised"."""

    def __init__(self, reason: str, kind: str = "skipped"):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


def ingest(paths: Iterable[str | os.PathLike], *, max_file_bytes: int = MAX_FILE_BYTES) -> IngestResult:
    """Read every recognisable file under `paths` (files or folders, walked recursively without
    following symlinks) into one tidy sample table; files larger than `max_file_bytes` are skipped
    unread. Never raises for a bad file: its FileReport says why it was skipped."""
    rows: list[dict] = []
    reports: list[FileReport] = []
    seen_files: set[tuple[int, int]] = set()
    for root in paths:
        root_s = os.fspath(root)
        for fpath, rel, st, skip in _walk(root_s):
            mtime = _iso(st.st_mtime) if st is not None else None
            if skip is not None:
                reports.append(FileReport(rel, "skipped", reason=skip, mtime=mtime, root=root_s))
                continue
            if (st.st_dev, st.st_ino) in seen_files:
                reports.append(FileReport(rel, "skipped", reason="already read under another root",
                                          mtime=mtime, root=root_s))
                continue
            seen_files.add((st.st_dev, st.st_ino))
            try:
                fmt, file_rows, note = _read_file(fpath, rel, st, max_file_bytes)
            except _Skip as s:
                reports.append(FileReport(rel, s.kind, reason=s.reason, mtime=mtime, root=root_s))
                continue
            except Exception as e:  # noqa: BLE001 - the per-file boundary: record why, go on
                reports.append(FileReport(rel, "skipped", reason=f"could not read: {type(e).__name__}: {e}",
                                          mtime=mtime, root=root_s))
                continue
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
    return IngestResult(frame=table.frame(rows), files=reports)


# --- walking -------------------------------------------------------------------------------------------

def _walk(root: str):
    """(path, rel, lstat, skip_reason) for every entry worth reporting under `root`; never follows
    a symlink, never descends a directory twice (bind-mount loops)."""
    name = Path(root).name or root
    try:
        st = os.lstat(root)
    except OSError as e:
        yield root, name, None, _os_reason(e)
        return
    if stat.S_ISLNK(st.st_mode):
        yield root, name, st, "symlink not followed"
        return
    if stat.S_ISREG(st.st_mode):
        yield root, name, st, _name_rule(name)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield root, name, st, "not a regular file"
        return
    visited = {(st.st_dev, st.st_ino)}
    stack = [(root, "")]
    while stack:
        dpath, drel = stack.pop()
        try:
            with os.scandir(dpath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield dpath, drel or name, None, _os_reason(e)
            continue
        subdirs = []
        for e in entries:
            rel = f"{drel}/{e.name}" if drel else e.name
            # Decided from the entry's type and name first: no stat for what is not read.
            try:
                if e.is_symlink():
                    yield e.path, rel, None, "symlink not followed"
                elif (why := _name_rule(e.name)) is not None:
                    yield e.path, rel, None, why
                elif e.is_dir(follow_symlinks=False) and _derived_output_dir(e):
                    yield e.path, rel, None, "derived harness file"
                elif e.is_dir(follow_symlinks=False):
                    est = e.stat(follow_symlinks=False)
                    if (est.st_dev, est.st_ino) in visited:
                        yield e.path, rel, est, "directory already visited"
                    else:
                        visited.add((est.st_dev, est.st_ino))
                        subdirs.append((e.path, rel))
                elif e.is_file(follow_symlinks=False):
                    yield e.path, rel, e.stat(follow_symlinks=False), None
                else:
                    yield e.path, rel, None, "not a regular file"
            except OSError as err:
                yield e.path, rel, None, _os_reason(err)
        stack.extend(reversed(subdirs))


# Folders that `harness analyze` / `harness report` write, recognised by their marker file.
DERIVED_OUTPUT_DIRS = {"report": "report.md", "analysis": "configurations.csv"}


def _derived_output_dir(entry) -> bool:
    marker = DERIVED_OUTPUT_DIRS.get(entry.name)
    return marker is not None and os.path.isfile(os.path.join(entry.path, marker))


def _name_rule(name: str) -> str | None:
    """Why a file or folder is not read, by its name alone (our own derived files), or None."""
    if name in DERIVED_FILES or name in DERIVED_DIRS:
        return "derived harness file"
    if name.startswith(TMP_PREFIX):
        return "temporary file of an interrupted write"
    return None


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "not found"
    return f"cannot read: {e.strerror or e}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _read_bytes(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; a symlink swapped in after the walk is refused."""
    try:
        fd = os.open(path, _O_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Skip("symlink not followed") from None
        raise _Skip(_os_reason(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip("not a regular file")
        if st.st_size > limit:
            raise _Skip(f"larger than max_file_bytes ({st.st_size} > {limit} bytes)")
        parts, total, want = [], 0, min(st.st_size, limit) + 1
        while total <= limit:  # the file may grow while we read it: never past the limit
            b = os.read(fd, want)
            if not b:
                break
            parts.append(b)
            total += len(b)
    finally:
        os.close(fd)
    if total > limit:
        raise _Skip(f"larger than max_file_bytes (> {limit} bytes)")
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data


# --- decoding and sniffing -----------------------------------------------------------------------------

def _decode(data: bytes) -> str:
    if not data:
        raise _Skip("empty file")
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise _Skip("not UTF-8 (UTF-32 BOM)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _Skip("not UTF-8 (UTF-16 BOM)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    head = data[:8192]
    if b"\x00" in head:
        if len(head) >= 8 and not any(head[1::2][:64]):
            raise _Skip("not UTF-8 (looks like UTF-16 LE without BOM)")
        if len(head) >= 8 and not any(head[0::2][:64]):
            raise _Skip("not UTF-8 (looks like UTF-16 BE without BOM)")
        raise _Skip("binary file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Skip(f"not UTF-8 (invalid byte at offset {e.start})") from None
    if not text.strip():
        raise _Skip("empty file (whitespace only)")
    return text


_LEADING_SPACE = re.compile(r"\s*")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _json_depth_ok(data: bytes) -> bool:
    """False when brackets outside strings nest deeper than MAX_JSON_DEPTH (checked on the raw
    UTF-8 bytes before parsing, so a hostile file cannot exhaust the parser's recursion)."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:  # cheap bound: most files stop here
        return True
    if b"\\" in data:  # escapes: drop escaped backslashes, then escaped quotes
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = 0
    for ch in b"".join(data.split(b'"')[0::2]).translate(None, _NOT_BRACKET):  # outside strings
        if ch in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        else:
            depth -= 1
    return True


def _parse_json(text: str) -> tuple[Any, str | None, str | None]:
    """(value, error, note): a JSON document, or a list of objects for JSON Lines (a truncated last
    line is dropped with a note, as an interrupted writer leaves it)."""
    try:
        # orjson parses ~4x faster, which is most of ingest for large sweeps; it refuses the
        # NaN/Infinity literals some tools write, which the standard parser then takes.
        return orjson.loads(text), None, None
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text), None, None
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", None
    except json.JSONDecodeError as e:
        end = len(text.rstrip())
        first_error = (f"truncated JSON (ends inside a value at char {end})" if e.pos >= end
                       else f"invalid JSON ({e})")
    except ValueError as e:  # e.g. an integer too long to convert
        first_error = f"invalid JSON ({e})"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or not _is_json(lines[0]):  # not JSON Lines: report the document's error
        return None, first_error, None
    out = []
    for i, ln in enumerate(lines):
        try:
            out.append(json.loads(ln))
        except ValueError as e:
            if i == len(lines) - 1 and out:
                return out, None, "last line truncated, dropped"
            return None, f"invalid JSON Lines (line {i + 1}: {e})", None
    return out, None, None


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def _llamabench():
    """The llama-bench reader, imported when first needed; None while it is not installed."""
    name = f"{__package__}.formats.llamabench"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def _read_file(path: str, rel: str, st: os.stat_result, limit: int) -> tuple[str, list[dict], str | None]:
    """(source_format, rows, note) of one file, or _Skip."""
    if st.st_size > limit:  # decided from the walk's lstat: the file is never opened
        raise _Skip(f"larger than max_file_bytes ({st.st_size} > {limit} bytes)")
    data = _read_bytes(path, limit)
    text = _decode(data)
    ext = os.path.splitext(rel)[1].lower()
    start = _LEADING_SPACE.match(text).end()  # no copy of a large text just to look at its start
    if text[start:start + 1] in ("{", "["):
        if ext in (".csv", ".sql"):
            raise _Skip(f"extension {ext} but not {ext[1:].upper()}")
        if not _json_depth_ok(data):
            raise _Skip(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        doc, error, note = _parse_json(text)
        if error is None:
            got = _from_json(doc, rel)
            if got is not None:
                fmt, rows, note2 = got
                return fmt, _finish(rows), "; ".join(x for x in (note, note2) if x) or None
        lb = _llamabench()
        fmt = lb.sniff(text) if lb else None
        if fmt:
            return fmt, _finish(lb.rows(text, fmt, rel)), None
        if error is not None:
            raise _Skip(error)
        raise _Skip("JSON of no known format", "unrecognised")
    if ext in _JSON_EXTS:
        raise _Skip(f"extension {ext} but not JSON")
    end = text.find("\n", start)
    header = next(csv.reader([text[start:] if end < 0 else text[start:end]]), [])
    fmt = _OLLAMA_CSV.get(tuple(h.strip() for h in header))
    if fmt:
        rows, note = _ollama_csv_rows(text[start:], fmt, rel)
        return fmt, _finish(rows), note
    lb = _llamabench()
    fmt = lb.sniff(text) if lb else None
    if fmt:
        return fmt, _finish(lb.rows(text, fmt, rel)), None
    if ext == ".csv" or len(header) > 1:
        shown = ",".join(header)
        raise _Skip(f"CSV with unknown header: {shown[:120]}", "unrecognised")
    raise _Skip("no known format", "unrecognised")


def _from_json(data: Any, rel: str) -> tuple[str, list[dict], str | None] | None:
    if isinstance(data, dict) and "schema_version" in data and "run_id" in data and "status" in data:
        v = data["schema_version"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _Skip(f"schema_version {v!r} is not one this harness reads ({SCHEMA_VERSION})")
        if v > SCHEMA_VERSION:
            raise _Skip(f"schema_version {v} is newer than this harness reads ({SCHEMA_VERSION})")
        if isinstance(data.get("config"), dict) and "agent" in data["config"]:
            # The narrative's own generation (report/agent/run.json, or an agent experiment's):
            # a measurement of the report step, not a point of the sweep it describes.
            raise _Skip("the narrative agent's own run, not sweep data")
        return "harness", table.rows_from_record(data, rel), None
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "machine_info" in data:
        return "pytest-benchmark", *_pytest_benchmark_rows(data, rel)
    objs = data if isinstance(data, list) else [data]
    if any(isinstance(o, dict) and _OLLAMA_API_KEYS <= o.keys() for o in objs):
        return "ollama-api", *_ollama_api_rows(objs, rel)
    return None


# --- rows ----------------------------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    """A finite number, or None (empty, text, NaN, inf, bool)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _scaled(v: Any, factor: float) -> float | None:
    x = _num(v)
    return None if x is None else x * factor


def _ratio(num: Any, den: Any, factor: float = 1.0) -> float | None:
    n, d = _num(num), _num(den)
    return None if n is None or not d else n / (d * factor)


def _synthetic_id(rel: str, config: Any) -> str:
    return hashlib.sha256(f"{rel}\0{config!r}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _label(prompt: str) -> str:
    s = " ".join(prompt.split())
    return s if len(s) <= PROMPT_LABEL_CHARS else s[: PROMPT_LABEL_CHARS - 1] + "…"


def _error_text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return None if s.lower() in _NO_ERROR else s


def _finish(rows: list[dict]) -> list[dict]:
    """Apply 'junk is not data': an error or all-zero metrics make a failed row without metrics."""
    for row in rows:
        err = _error_text(row.get("error"))
        if err is None and row.get("status") != "failed" and any(_num(row.get(m)) for m in table.METRICS):
            row["status"], row["error"] = "ok", None
            continue
        if err is None:
            err = "failed (no error text)" if row.get("status") == "failed" else "all metrics zero"
        row["status"], row["error"] = "failed", err
        for m in table.METRICS:
            row[m] = None
    return rows


def _base(fmt: str, rel: str, **kw) -> dict:
    row = table.empty_row()
    row["source_format"], row["source_file"] = fmt, rel
    row.update(kw)
    return row


def _ollama_csv_rows(text: str, fmt: str, rel: str) -> tuple[list[dict], str | None]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader)]
    out: list[dict] = []
    reps: Counter = Counter()
    malformed = 0
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            malformed += 1
            continue
        r = dict(zip(header, fields))
        row = _base(fmt, rel, engine="ollama", job="ollama")
        if fmt == "ollama-calls":
            key: Any = r["prompt"]
            row["workload"] = _label(r["prompt"])
        else:
            row.update(job=r["config_name"].strip() or None, n_gpu_layers=r["num_gpu"].strip() or None,
                       n_ctx=_num(r["num_ctx"]), temperature=_num(r["temperature"]))
            key = (r["config_name"].strip(), r["num_gpu"].strip(), r["num_ctx"].strip(), r["temperature"].strip())
        row["run_id"] = _synthetic_id(rel, key)
        if fmt == "ollama-summary":
            row.update(decode_tps=_num(r["mean_tokens_s"]), ttft_ms=_scaled(r["mean_ttft_s"], 1e3),
                       load_ms=_scaled(r["mean_load_s"], 1e3))
        else:
            row.update(rep=reps[row["run_id"]], ttft_ms=_scaled(r["ttft_s"], 1e3), decode_tps=_num(r["tokens_s"]),
                       load_ms=_scaled(r["load_s"], 1e3), prompt_eval_ms=_scaled(r["prompt_eval_s"], 1e3),
                       decode_ms=_scaled(r["eval_s"], 1e3), n_gen_tokens=_num(r["eval_count"]), error=r["error"])
            reps[row["run_id"]] += 1
        out.append(row)
    notes = []
    if fmt == "ollama-summary":
        notes.append("pre-averaged values (one mean per config, not samples; rep is empty)")
    if malformed:
        notes.append(f"{malformed} malformed rows dropped (wrong number of fields)")
    return out, "; ".join(notes) or None


def _ollama_api_rows(objs: list, rel: str) -> tuple[list[dict], str | None]:
    out: list[dict] = []
    reps: Counter = Counter()
    chunks = 0
    for o in objs:
        if not isinstance(o, dict):
            continue
        if not (_OLLAMA_API_KEYS & o.keys()) and not o.get("error"):
            chunks += 1  # a streamed partial response: its timings are in the final object
            continue
        model = o.get("model") if isinstance(o.get("model"), str) else None
        load_ms = _scaled(o.get("load_duration"), 1e-6)
        total_ms = _scaled(o.get("total_duration"), 1e-6)
        row = _base("ollama-api", rel, engine="ollama", job="ollama", model=model,
                    run_id=_synthetic_id(rel, model), started_at=o.get("created_at"),
                    load_ms=load_ms, prompt_eval_ms=_scaled(o.get("prompt_eval_duration"), 1e-6),
                    n_prompt_tokens=_num(o.get("prompt_eval_count")), n_gen_tokens=_num(o.get("eval_count")),
                    decode_ms=_scaled(o.get("eval_duration"), 1e-6),
                    decode_tps=_ratio(o.get("eval_count"), o.get("eval_duration"), 1e-9),
                    prefill_tps=_ratio(o.get("prompt_eval_count"), o.get("prompt_eval_duration"), 1e-9),
                    e2e_ms=None if total_ms is None else total_ms - (load_ms or 0.0),
                    error=o.get("error"))
        row["rep"] = reps[row["run_id"]]
        reps[row["run_id"]] += 1
        out.append(row)
    return out, (f"{chunks} streamed partial responses without timings ignored" if chunks else None)


def _pytest_benchmark_rows(doc: dict, rel: str) -> tuple[list[dict], str | None]:
    mi = doc.get("machine_info") if isinstance(doc.get("machine_info"), dict) else {}
    cpu = mi.get("cpu") if isinstance(mi.get("cpu"), dict) else {}
    brand = cpu.get("brand_raw") or cpu.get("brand") or mi.get("processor") or None
    node = mi.get("node") or None
    hardware = f"{brand} @ {node}" if brand and node else (brand or node)
    out: list[dict] = []
    averaged = 0
    for b in doc["benchmarks"]:
        if not isinstance(b, dict):
            continue
        name = b.get("name") or b.get("fullname")
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else {}
        base = _base("pytest-benchmark", rel, job=name, run_id=_synthetic_id(rel, b.get("fullname") or name),
                     hardware=hardware, started_at=doc.get("datetime"),
                     engine=extra.get("engine") if isinstance(extra.get("engine"), str) else None)
        for src in (b.get("params") if isinstance(b.get("params"), dict) else {}, extra):
            for k, v in src.items():
                col = _PARAM_ALIASES.get(k, k)
                if col == "n_gpu_layers" and v is not None:
                    base[col] = str(v)
                elif col in table.PARAMS or col == "model":
                    base[col] = v
        for m in table.METRICS:
            if m in extra:
                base[m] = _num(extra[m])
        data = stats.get("data")
        if isinstance(data, list) and data:
            out.extend(base | {"rep": i, "e2e_ms": _scaled(v, 1e3)} for i, v in enumerate(data))
        else:
            averaged += 1
            out.append(base | {"e2e_ms": _scaled(stats.get("mean"), 1e3)})
    note = (f"{averaged} benchmarks without stats.data: one pre-averaged row each (stats.mean)"
            if averaged else None)
    return out, note
