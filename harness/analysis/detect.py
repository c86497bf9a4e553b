"""Which format a file is, decided by its content (the extension is only a hint), and its reader.

JSON documents by what their keys mean: our run.json record, pytest-benchmark's saved run, Ollama
API responses, llama-server `/completion` responses (`timings`), vLLM `bench serve` results,
GuideLLM reports, AIPerf exports, optimum-benchmark reports, llama-bench's json/jsonl printers, and
then any document with objects that carry a throughput or latency and name their configuration
(`bymeaning.json_records`). Tables by what their columns mean (`columns`): the older Ollama tool's
CSVs whatever columns they add, application-level CSVs, llama-bench's csv printer, AIPerf's
statistics CSV. Text: Ollama's `--verbose` statistics, llama-bench's SQL. A file of no known
format is a `Skip` of kind "unrecognised".

Large files: CSV and JSON Lines are streamed row by row (memory grows with the rows kept, not the
file); a document that must be parsed whole (JSON, SQL, text) is capped at
files.MAX_DOCUMENT_BYTES.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from typing import Any, Iterator

import orjson

from ..record import SCHEMA_VERSION
from . import bymeaning, columns, files, foreign, table
from .files import Skip
from .formats import embedded, llamabench, loadgen, optimum, servers, tidy
from .reading import Reading

JSON_EXTS = frozenset({".json", ".jsonl", ".ndjson"})
LEADING_SPACE = re.compile(r"\s*")
#: Rows read before a table's units are decided (durations whose name gives no unit).
SAMPLE_ROWS = 200


def read_file(path: str, rel: str, st: os.stat_result, limit: int) -> Reading:
    """The Reading of one file, or Skip. `st` is the walk's lstat of it; files over `limit` bytes
    are never opened. Rows of a streamed file are read while the Reading's rows are consumed (the
    caller keeps the file's rows only once they are all read)."""
    if st.st_size > limit:  # decided from the walk's lstat: the file is never opened
        raise Skip(f"larger than max_file_bytes ({st.st_size} > {limit} bytes)")
    raw, size = files.open_bounded(path, limit)
    closing = True
    try:
        head = raw.read(files.HEAD_BYTES) or b""
        if head[:4] == tidy.PARQUET_MAGIC:  # our `harness export --format parquet`
            if size > files.MAX_DOCUMENT_BYTES:
                raise Skip(f"Parquet file larger than {files.MAX_DOCUMENT_BYTES >> 20} MiB, the cap for files read whole")
            data = head + _read_rest(raw)
            if not tidy.is_parquet(data):
                raise Skip("binary file")
            return Reading("harness-parquet", tidy.parquet_rows(data, rel))
        start = files.check_head(head)
        ext = os.path.splitext(rel)[1].lower()
        head_text = head[start:].decode("utf-8", errors="ignore")
        lead = LEADING_SPACE.match(head_text).end()
        first = head_text[lead:lead + 1]
        whole = size <= files.MAX_DOCUMENT_BYTES
        if first in ("{", "[") and ext in (".csv", ".sql"):
            raise Skip(f"extension {ext} but not {ext[1:].upper()}")
        if whole:
            data = head + _read_rest(raw)
            return _whole(files.decode(data), data, rel, ext)
        if first in ("{", "["):
            reading = _jsonl_stream(raw, head, start, rel)
        else:
            if ext in JSON_EXTS:
                raise Skip(f"extension {ext} but not JSON")
            reading = _csv_stream(raw, head, start, rel, head_text)
        closing = False
        return reading
    finally:
        if closing:
            raw.close()


def _read_rest(raw) -> bytes:
    """The rest of a bounded file (Skip when it grows past its limit)."""
    parts = []
    while True:
        b = raw.read(1 << 20)
        if not b:
            break
        parts.append(b)
    return b"".join(parts)


def _whole(text: str, data: bytes, rel: str, ext: str) -> Reading:
    start = LEADING_SPACE.match(text).end()  # no copy of a large text just to look at its start
    if text[start:start + 1] in ("{", "["):
        if not files.json_depth_ok(data):
            raise Skip(f"JSON nested deeper than {files.MAX_JSON_DEPTH} levels")
        doc, error, note = files.parse_json(text)
        if error is None:
            got = from_json(doc, rel)
            if got is not None:
                if note:
                    got.notes.insert(0, note)
                return got
        fmt = llamabench.sniff(text)
        if fmt:
            return Reading(fmt, llamabench.rows(text, fmt, rel))
        if error is not None:
            raise Skip(error)
        raise Skip("JSON of no known format", "unrecognised")
    if ext in JSON_EXTS:
        raise Skip(f"extension {ext} but not JSON")
    fmt = llamabench.sniff(text)
    if fmt:
        return Reading(fmt, llamabench.rows(text, fmt, rel))
    got = servers.ollama_verbose(text, rel)
    if got is not None:
        return got
    got = loadgen.aiperf_csv(text, rel)
    if got is not None:
        return got
    body = text[start:]
    end = body.find("\n")
    header = next(csv.reader([body if end < 0 else body[:end]]), [])
    if tidy.sniff_csv_header(header):
        return _tidy(csv.reader(io.StringIO(body)), rel)
    lay = columns.layout(header)
    if lay.readable:
        return _table(csv.reader(io.StringIO(body)), rel, lay)
    if ext == ".csv" or len(header) > 1:
        shown = ",".join(header)
        raise Skip(f"CSV with unknown header ({lay.why_not()}): {shown[:120]}", "unrecognised")
    raise Skip("no known format", "unrecognised")


def _table(records: Iterator[list[str]], rel: str, lay: columns.Layout | None = None) -> Reading:
    """A CSV read by meaning; `records` yields the header first. Rows stream: the first SAMPLE_ROWS
    are read ahead to decide the units of durations whose name gives none."""
    header = [h.strip() for h in next(records)]
    lay = lay or columns.layout(header)
    if not lay.readable:
        raise Skip(f"CSV with unknown header ({lay.why_not()}): {','.join(header)[:120]}", "unrecognised")
    sample = []
    for rec in records:
        sample.append(rec)
        if len(sample) >= SAMPLE_ROWS:
            break
    reading = Reading(bymeaning.table_format(header, lay))
    reader = bymeaning.TableReader(header, rel, reading, sample, lay)

    def all_records():
        yield from sample
        yield from records

    reading.rows = reader.rows(all_records())
    return reading


def _tidy(records: Iterator[list[str]], rel: str) -> Reading:
    """Our own tidy-table CSV export (`harness export --format csv`), row by row."""
    header = [h.strip() for h in next(records)]

    def rows():
        for rec in records:
            if not any(f.strip() for f in rec):
                continue
            if len(rec) != len(header):
                raise ValueError(f"harness-csv: a row of {len(rec)} fields under a header of {len(header)}")
            yield tidy.csv_row(dict(zip(header, rec)), rel)

    return Reading("harness-csv", rows())


def _csv_stream(raw, head: bytes, start: int, rel: str, head_text: str) -> Reading:
    """A large CSV, streamed (only CSV read by meaning: other text formats are parsed whole)."""
    end = head_text.find("\n")
    header = next(csv.reader([head_text if end < 0 else head_text[:end]]), [])
    lay = columns.layout(header)
    ours = tidy.sniff_csv_header(header)
    if not lay.readable and not ours:
        raise Skip(f"{'CSV with unknown header (' + lay.why_not() + ')' if len(header) > 1 else 'no known format'}"
                   f" (text over {files.MAX_DOCUMENT_BYTES >> 20} MiB is read only as CSV)", "unrecognised")
    os.lseek(raw.fd, start, os.SEEK_SET)  # the text again from its start (the head was read to sniff)
    raw.total = start
    text = io.TextIOWrapper(io.BufferedReader(raw, 1 << 20), encoding="utf-8", errors="strict", newline="")
    reading = _tidy(csv.reader(text), rel) if ours else _table(csv.reader(text), rel, lay)
    inner = reading.rows

    def rows():
        try:
            yield from inner
        except UnicodeDecodeError as e:
            raise Skip(f"not UTF-8 (invalid byte after {raw.total} bytes: {e.reason})") from None
        except csv.Error as e:
            raise Skip(f"malformed CSV ({e})") from None
        finally:
            text.close()

    reading.rows = rows()
    return reading


def _jsonl_stream(raw, head: bytes, start: int, rel: str) -> Reading:
    """A large JSON Lines file, streamed one object per line; a whole JSON document this large is
    refused (parsing it whole would take ~20x its size in memory)."""
    nl = head.find(b"\n", start)
    try:
        first = orjson.loads(head[start:nl]) if nl > 0 else None
    except orjson.JSONDecodeError:
        first = None
    if not isinstance(first, dict):
        raise Skip(f"JSON document larger than {files.MAX_DOCUMENT_BYTES >> 20} MiB, the cap for JSON parsed whole "
                   "(JSON Lines is streamed up to max_file_bytes)")
    os.lseek(raw.fd, start, os.SEEK_SET)
    raw.total = start
    buf = io.BufferedReader(raw, 1 << 20)
    reading = Reading("json")
    state = {"bad": 0, "last_bad": False}

    def objects():
        for line in buf:
            if not line.strip():
                continue
            try:
                o = orjson.loads(line)
            except orjson.JSONDecodeError:
                state["bad"] += 1
                continue
            if isinstance(o, dict):
                yield o

    kind = _object_kind(first)
    if kind is None:
        raise Skip("JSON Lines of no known format", "unrecognised")

    def rows():
        try:
            yield from _object_rows(kind, objects(), rel, reading, first)
            if state["bad"]:
                reading.notes.append(f"{state['bad']} lines that are not JSON dropped")
        finally:
            buf.close()

    reading.fmt = kind if kind != "flat" else "json"
    reading.rows = rows()
    return reading


def _object_kind(o: dict) -> str | None:
    """What one JSON Lines object is: "ollama-api", "aiperf-records", "llama-server", "flat" (read by
    meaning) or None."""
    if foreign.OLLAMA_API_KEYS & o.keys() or ("model" in o and "done" in o):
        return "ollama-api"
    if loadgen.is_aiperf_record(o):
        return "aiperf-records"
    if servers.is_llama_server(o):
        return "llama-server"
    header = [k for k, v in o.items() if bymeaning.scalar(v)]
    return "flat" if columns.layout(header).readable else None


def _object_rows(kind: str, objs, rel: str, reading: Reading, first: dict):
    if kind == "ollama-api":
        counts: Counter = Counter()

        def rows():
            yield from foreign.ollama_api_iter(objs, rel, counts)
            reading.notes.append(foreign.ollama_api_note(counts))
        return rows()
    if kind == "aiperf-records":
        return loadgen.aiperf_records(objs, rel, reading)
    if kind == "llama-server":
        return servers.llama_server_rows(objs, rel, reading)
    header = [k for k, v in first.items() if bymeaning.scalar(v)]
    reader = bymeaning.TableReader(header, rel, reading, [[first.get(k) for k in header]])
    reading.fmt = "json"
    return reader.rows([o.get(k, "") if o.get(k) is not None else "" for k in header] for o in objs)


def _llamabench_doc(data: Any) -> bool:
    """True for llama-bench's json/jsonl printers' objects (its reader takes them)."""
    objs = data if isinstance(data, list) else [data]
    return bool(objs) and isinstance(objs[0], dict) and set(llamabench.REQUIRED) <= objs[0].keys()


def from_json(data: Any, rel: str) -> Reading | None:
    """The Reading of a parsed JSON document by what its keys mean (see the module doc); None for
    none of them (llama-bench JSON is sniffed by its reader)."""
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
        return Reading("harness", table.rows_from_record(data, rel))
    if isinstance(data, dict) and "schema_version" in data and "experiment" in data:
        raise Skip("an experiment's own record (harness experiment), not sweep data")
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "machine_info" in data:
        carried = embedded.pytest_benchmark_rows(data, rel)  # our export: the runs' own rows
        if carried is not None:
            return Reading("pytest-benchmark", carried)
        rows, note, aggs = foreign.pytest_benchmark_read(data, rel)
        return Reading("pytest-benchmark", rows, aggs, [note])
    for reader in (loadgen.vllm, loadgen.guidellm, loadgen.aiperf_json, optimum.report):
        got = reader(data, rel)
        if got is not None:
            return got
    objs = data if isinstance(data, list) else [data]
    dicts = [o for o in objs if isinstance(o, dict)]
    if any(foreign.OLLAMA_API_KEYS <= o.keys() for o in dicts):
        rows, note = foreign.ollama_api_rows(objs, rel)
        return Reading("ollama-api", rows, notes=[note])
    if dicts and any(servers.is_llama_server(o) for o in dicts):
        r = Reading("llama-server")
        r.rows = list(servers.llama_server_rows(dicts, rel, r))
        return r
    if dicts and all(loadgen.is_aiperf_record(o) for o in dicts[:5]):
        r = Reading("aiperf-records")
        r.rows = list(loadgen.aiperf_records(dicts, rel, r))
        return r
    if isinstance(data, list) and dicts and len(dicts) == len(data) and not _llamabench_doc(data):
        header = list(dict.fromkeys(k for o in dicts[:SAMPLE_ROWS] for k, v in o.items() if bymeaning.scalar(v)))
        lay = columns.layout(header)
        if lay.readable and all(bymeaning.scalar(v) for o in dicts[:SAMPLE_ROWS] for v in o.values()):  # flat records
            r = Reading("json")
            sample = [[o.get(k, "") for k in header] for o in dicts[:SAMPLE_ROWS]]
            reader = bymeaning.TableReader(header, rel, r, sample, lay)
            r.rows = list(reader.rows([("" if o.get(k) is None else o.get(k)) for k in header] for o in dicts))
            return r
    if _llamabench_doc(data):
        return None
    return bymeaning.json_records(data, rel)
