"""Which format a file is, decided by its content (the extension is only a hint), and its rows.

JSON documents by what their keys mean (our run.json record, pytest-benchmark's saved run, Ollama
API responses, llama-bench's json/jsonl printers); CSVs by their header (the Ollama-style scripts'
columns, llama-bench's csv printer); llama-bench's SQL by its statements. A file of no known
format is a `Skip` of kind "unrecognised".
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any

from ..record import SCHEMA_VERSION
from . import files, foreign, table
from .files import Skip
from .formats import llamabench

JSON_EXTS = frozenset({".json", ".jsonl", ".ndjson"})
LEADING_SPACE = re.compile(r"\s*")


def read_file(path: str, rel: str, st: os.stat_result, limit: int) -> tuple[str, list[dict], str | None]:
    """(source_format, rows as the reader made them, note) of one file, or Skip. `st` is the
    walk's lstat of it; files over `limit` bytes are never opened."""
    if st.st_size > limit:  # decided from the walk's lstat: the file is never opened
        raise Skip(f"larger than max_file_bytes ({st.st_size} > {limit} bytes)")
    data = files.read_bytes(path, limit)
    text = files.decode(data)
    ext = os.path.splitext(rel)[1].lower()
    start = LEADING_SPACE.match(text).end()  # no copy of a large text just to look at its start
    if text[start:start + 1] in ("{", "["):
        if ext in (".csv", ".sql"):
            raise Skip(f"extension {ext} but not {ext[1:].upper()}")
        if not files.json_depth_ok(data):
            raise Skip(f"JSON nested deeper than {files.MAX_JSON_DEPTH} levels")
        doc, error, note = files.parse_json(text)
        if error is None:
            got = from_json(doc, rel)
            if got is not None:
                fmt, rows, note2 = got
                return fmt, rows, "; ".join(x for x in (note, note2) if x) or None
        fmt = llamabench.sniff(text)
        if fmt:
            return fmt, llamabench.rows(text, fmt, rel), None
        if error is not None:
            raise Skip(error)
        raise Skip("JSON of no known format", "unrecognised")
    if ext in JSON_EXTS:
        raise Skip(f"extension {ext} but not JSON")
    end = text.find("\n", start)
    header = next(csv.reader([text[start:] if end < 0 else text[start:end]]), [])
    fmt = foreign.OLLAMA_CSV.get(tuple(h.strip() for h in header))
    if fmt:
        rows, note = foreign.ollama_csv_rows(text[start:], fmt, rel)
        return fmt, rows, note
    fmt = llamabench.sniff(text)
    if fmt:
        return fmt, llamabench.rows(text, fmt, rel), None
    if ext == ".csv" or len(header) > 1:
        shown = ",".join(header)
        raise Skip(f"CSV with unknown header: {shown[:120]}", "unrecognised")
    raise Skip("no known format", "unrecognised")


def from_json(data: Any, rel: str) -> tuple[str, list[dict], str | None] | None:
    """(source_format, rows, note) of a parsed JSON document by what its keys mean: our run
    record, pytest-benchmark's saved run, Ollama API responses; None for none of them (llama-bench
    JSON is sniffed by its reader)."""
    if isinstance(data, dict) and "schema_version" in data and "run_id" in data and "status" in data:
        v = data["schema_version"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise Skip(f"schema_version {v!r} is not one this harness reads ({SCHEMA_VERSION})")
        if v > SCHEMA_VERSION:
            raise Skip(f"schema_version {v} is newer than this harness reads ({SCHEMA_VERSION})")
        if isinstance(data.get("config"), dict) and "agent" in data["config"]:
            # The narrative's own generation (report/agent/run.json, or an agent experiment's):
            # a measurement of the report step, not a point of the sweep it describes.
            raise Skip("the narrative agent's own run, not sweep data")
        return "harness", table.rows_from_record(data, rel), None
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "machine_info" in data:
        return "pytest-benchmark", *foreign.pytest_benchmark_rows(data, rel)
    objs = data if isinstance(data, list) else [data]
    if any(isinstance(o, dict) and foreign.OLLAMA_API_KEYS <= o.keys() for o in objs):
        return "ollama-api", *foreign.ollama_api_rows(objs, rel)
    return None
