"""Reading llama-bench output (json / jsonl / csv / sql printers) into tidy sample rows.

Which printer wrote a text is decided by content (`sniff`); `rows` maps each test to samples as
`formats.llamabench` describes (pp, tg and pp+tg tests; one row from the averages when a printer
wrote no samples arrays). A test that carries its run's own rows in a `harness` field (our
exports, `formats.embedded`) gives those rows instead, each run once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re

from .. import table
from . import embedded, llamabench_sql
from .llamabench_spec import FORMATS, REQUIRED, SQL_TABLES_READ


def sniff(text: str) -> str | None:
    """The llama-bench format of `text` ("llama-bench-json" | "-jsonl" | "-csv" | "-sql"), or None.
    Decided by content: the keys / header / column list must name every field in REQUIRED."""
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        return None
    if body.startswith("["):
        try:
            data = json.loads(body)
        except ValueError:
            return None
        ok = isinstance(data, list) and data and all(isinstance(d, dict) for d in data)
        return "llama-bench-json" if ok and _has_required(data[0]) else None
    if body.startswith("{"):
        try:
            first = json.loads(body.splitlines()[0])
        except ValueError:
            return None
        return "llama-bench-jsonl" if isinstance(first, dict) and _has_required(first) else None
    tables = "|".join(SQL_TABLES_READ)
    for rx in (rf'\bINSERT\s+INTO\s+"?(?:{tables})"?\s*\(([^)]*)\)',
               rf'\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"?(?:{tables})"?\s*\(([^)]*)\)'):
        m = re.search(rx, body, re.I)
        if m and _has_required(c.split()[0].strip('"') for c in m.group(1).split(",") if c.strip()):
            return "llama-bench-sql"
    header = next(csv.reader(io.StringIO(body.splitlines()[0])), [])
    return "llama-bench-csv" if _has_required(h.strip() for h in header) else None


def _has_required(keys) -> bool:
    return set(REQUIRED) <= set(keys)


def rows(text: str, fmt: str, source_file: str) -> list[dict]:
    """Tidy sample rows (see harness.analysis.table) of a llama-bench output in format `fmt`.
    One row per sample of every test; a test without samples (avg_ts <= 0, empty arrays) is one
    failed row. Raises ValueError on an unknown format, a malformed file, or SQL that does anything
    but create the llama-bench table and insert into it."""
    if fmt not in FORMATS:
        raise ValueError(f"llama-bench format must be one of {FORMATS}, got {fmt!r}")
    records = {"llama-bench-json": _json_records, "llama-bench-jsonl": _jsonl_records,
               "llama-bench-csv": _csv_records, "llama-bench-sql": llamabench_sql.records}[fmt](text)
    out: list[dict] = []
    seen = embedded.Seen()
    for i, rec in enumerate(records):
        try:
            carried = rec.get(embedded.KEY)
            if isinstance(carried, str):
                carried = json.loads(carried) if carried.strip() else None
            if carried is not None:
                out.extend(embedded.unpack(carried, fmt, source_file, seen))
            else:
                out.extend(_test_rows(rec, i, fmt, source_file))
        except (TypeError, ValueError, OverflowError) as e:
            raise ValueError(f"llama-bench test {i} of {source_file}: {e}") from None
    return out


def _json_records(text: str) -> list[dict]:
    data = json.loads(text)
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ValueError("llama-bench json: expected an array of objects")
    return data


def _jsonl_records(text: str) -> list[dict]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError(f"llama-bench jsonl: line {n} is not an object")
            out.append(d)
    return out


def _csv_records(text: str) -> list[dict]:
    return [dict(r) for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))]


def _int(v) -> int | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, str):
        v = v.strip()
        if v.lower() in ("true", "false"):
            return int(v.lower() == "true")
    f = float(v)
    return None if math.isnan(f) else int(f)


def _float(v) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _samples(v) -> list[float] | None:
    """Samples as printed: a JSON array, or (our csv/sql) a string of numbers. None when absent."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    s = str(v).strip().strip("[]")
    return [float(x) for x in re.split(r"[\s,]+", s) if x]


def _flash_attn(v) -> str | None:
    """1/0 (bool builds), true/false (json of bool builds), -1/0/1 (enum builds: auto/off/on)."""
    if v is None or v == "":
        return None
    s = str(v).strip().lower()
    return {"1": "on", "true": "on", "on": "on", "enabled": "on", "0": "off", "false": "off", "off": "off",
            "disabled": "off", "-1": "auto", "auto": "auto"}.get(s, s)


def _str(v) -> str | None:
    return None if v is None or str(v) == "" else str(v)


def _positive(v) -> int | None:
    """n_batch / n_ubatch / n_threads: llama-bench never prints 0; our writer does for unknown."""
    i = _int(v)
    return i if i is not None and i > 0 else None


def engine_of(rec: dict) -> str | None:
    commit, number, backends = _str(rec.get("build_commit")), _int(rec.get("build_number")), _str(rec.get("backends"))
    if commit is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{6,40}|unknown", commit):
        return commit  # an engine description written by our own dump()
    return " ".join(x for x in ("llama.cpp", commit, f"({number})" if number else None, backends) if x)


def _test_label(n_prompt: int, n_gen: int, n_depth: int) -> str:
    if n_prompt > 0 and n_gen == 0:
        label = f"pp{n_prompt}"
    elif n_gen > 0 and n_prompt == 0:
        label = f"tg{n_gen}"
    else:
        label = f"pp{n_prompt}+tg{n_gen}"
    return label + (f" @ d{n_depth}" if n_depth > 0 else "")


def _test_rows(rec: dict, index: int, fmt: str, source_file: str) -> list[dict]:
    n_prompt, n_gen = _int(rec.get("n_prompt")) or 0, _int(rec.get("n_gen")) or 0
    n_depth = _int(rec.get("n_depth")) or 0
    ngl = _int(rec.get("n_gpu_layers"))
    fa = _flash_attn(rec.get("flash_attn"))
    workload = _test_label(n_prompt, n_gen, n_depth)
    params = dict(ngl=ngl, fa=fa, b=_positive(rec.get("n_batch")), ub=_positive(rec.get("n_ubatch")),
                  t=_positive(rec.get("n_threads")), ctk=_str(rec.get("type_k")), ctv=_str(rec.get("type_v")))
    model_file = _str(rec.get("model_filename"))
    base = table.empty_row() | {
        "source_format": fmt, "source_file": source_file,
        "run_id": "lb-" + hashlib.sha256(f"{source_file}\0{index}".encode()).hexdigest()[:16],
        "job": workload + " " + ",".join(f"{k}={v}" for k, v in params.items() if v is not None),
        "started_at": _str(rec.get("test_time")),
        "hardware": " | ".join(x for x in (_str(rec.get("cpu_info")), _str(rec.get("gpu_info"))) if x) or None,
        "model": re.split(r"[\\/]", model_file)[-1] if model_file else None,
        "model_desc": _str(rec.get("model_type")),
        "engine": engine_of(rec),
        "n_gpu_layers": None if ngl is None else str(ngl), "n_ctx": n_prompt + n_gen + n_depth,
        "n_ctx_effective": n_prompt + n_gen + n_depth, "n_batch": params["b"], "n_ubatch": params["ub"],
        "n_threads": params["t"], "flash_attn": fa, "type_k": params["ctk"], "type_v": params["ctv"],
        "workload": workload, "n_prompt_tokens": n_prompt if n_prompt > 0 else None,
    }
    ns, ts = _samples(rec.get("samples_ns")), _samples(rec.get("samples_ts"))
    n_tokens = n_prompt + n_gen
    if ns is not None and ts is None:
        ts = [1e9 * n_tokens / x if x > 0 else 0.0 for x in ns]
    elif ts is not None and ns is None:
        ns = [1e9 * n_tokens / x if x > 0 else 0.0 for x in ts]
    if ns is not None and len(ns) != len(ts):
        raise ValueError(f"{len(ns)} samples_ns but {len(ts)} samples_ts")
    avg_ts, avg_ns = _float(rec.get("avg_ts")), _float(rec.get("avg_ns"))
    if ns is None:
        ns, ts = ([avg_ns], [avg_ts]) if avg_ts is not None and avg_ns is not None else ([], [])
    if not ts or (avg_ts is not None and avg_ts <= 0):
        return [base | {"rep": 0, "status": "failed", "error": "no samples"}]
    out = []
    for rep, (x_ns, x_ts) in enumerate(zip(ns, ts)):
        row = base | {"rep": rep, "status": "ok"}
        if n_prompt > 0 and n_gen == 0:
            row |= {"prompt_eval_ms": x_ns / 1e6, "prefill_tps": x_ts}
        elif n_gen > 0 and n_prompt == 0:
            row |= {"decode_ms": x_ns / 1e6, "decode_tps": x_ts, "n_gen_tokens": n_gen + 1}
        else:
            row |= {"e2e_ms": x_ns / 1e6, "n_gen_tokens": n_gen + 1}
        out.append(row)
    return out
