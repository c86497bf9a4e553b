"""llama-bench output (llama.cpp `tools/llama-bench`): read its json / jsonl / csv / sql printers
into tidy sample rows, and write a tidy frame back in those formats so llama.cpp's
`scripts/compare-llama-bench.py` can read our runs.

One llama-bench *test* is one configuration with `samples_ns` (one per repetition). Mapping:
- pp test (n_prompt > 0, n_gen == 0): prefill samples, prefill_tps = samples_ts,
  prompt_eval_ms = samples_ns / 1e6.
- tg test (n_gen > 0, n_prompt == 0): decode samples, decode_tps = samples_ts,
  decode_ms = samples_ns / 1e6. llama-bench's tgN times N single-token decode steps; in our glossary
  that is the decode phase of N + 1 generated tokens (decode_tps = (n_gen_tokens - 1) / decode_s),
  so n_gen_tokens = n_gen + 1, and the writer emits n_gen = n_gen_tokens - 1.
- pp+tg test (both > 0): e2e samples, e2e_ms = samples_ns / 1e6 (n_gen_tokens = n_gen + 1 as above).
- no samples arrays (llama-bench's csv and sql printers never write them): one row from avg_ns/avg_ts.

Only llama-bench's json/jsonl printers write `samples_ns` / `samples_ts`. Our writer adds them to
csv and sql too (space-separated numbers, as trailing columns) so that an export loses nothing;
compare-llama-bench.py ignores columns it does not know.

The SQL printer writes `CREATE TABLE IF NOT EXISTS llama_bench (...)` and one
`INSERT INTO llama_bench (...) VALUES ('...', ...);` per test (older builds named the table `test`;
both are read). SQL is never trusted: see `_sql_records`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sqlite3
import statistics
from datetime import datetime, timezone

from .. import table

# llama-bench's `test::get_fields()` (ggml-org/llama.cpp tools/llama-bench/llama-bench.cpp) with
# its `get_field_type()`, in printed order, then the two arrays the json printers append. One list
# for every reader and writer here. `use_mmap` was replaced by `load_mode` in current llama-bench
# but is still a key column of compare-llama-bench.py, so the writer keeps both.
_SPEC: tuple[tuple[str, str], ...] = (
    ("build_commit", "str"), ("build_number", "int"), ("cpu_info", "str"), ("gpu_info", "str"),
    ("backends", "str"), ("model_filename", "str"), ("model_type", "str"), ("model_size", "int"),
    ("model_n_params", "int"), ("n_batch", "int"), ("n_ubatch", "int"), ("n_threads", "int"),
    ("cpu_mask", "str"), ("cpu_strict", "bool"), ("poll", "int"), ("type_k", "str"), ("type_v", "str"),
    ("n_gpu_layers", "int"), ("n_cpu_moe", "int"), ("split_mode", "str"), ("main_gpu", "int"),
    ("no_kv_offload", "bool"), ("flash_attn", "int"), ("devices", "str"), ("tensor_split", "str"),
    ("tensor_buft_overrides", "str"), ("load_mode", "str"), ("use_mmap", "bool"), ("embeddings", "bool"),
    ("no_op_offload", "int"), ("no_host", "bool"), ("fit_target", "int"), ("fit_min_ctx", "int"),
    ("n_prompt", "int"), ("n_gen", "int"), ("n_depth", "int"), ("test_time", "str"),
    ("avg_ns", "int"), ("stddev_ns", "int"), ("avg_ts", "float"), ("stddev_ts", "float"),
    ("samples_ns", "samples"), ("samples_ts", "samples"),
)
FIELDS: tuple[str, ...] = tuple(name for name, _ in _SPEC)
FIELD_TYPES: dict[str, str] = dict(_SPEC)
REQUIRED = ("model_filename", "n_prompt", "n_gen", "avg_ts")  # what sniff() insists on
FORMATS = ("llama-bench-json", "llama-bench-jsonl", "llama-bench-csv", "llama-bench-sql")
SQL_TABLE = "llama_bench"  # what we write (current llama-bench, and what compare-llama-bench.py reads)
SQL_TABLES_READ = ("llama_bench", "test")  # `test`: llama-bench builds before the rename
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL", "samples": "TEXT"}

# Bounds on untrusted SQL: text size, VM instructions, one string/blob, one statement.
MAX_SQL_CHARS = 32 * 1024 * 1024
SQL_STEPS_BASE = 2_000_000
SQL_STEPS_PER_CHAR = 50
_SQL_LIMITS = {"SQLITE_LIMIT_ATTACHED": 0, "SQLITE_LIMIT_LENGTH": 1_000_000,
               "SQLITE_LIMIT_SQL_LENGTH": 1_000_000, "SQLITE_LIMIT_COLUMN": 256,
               "SQLITE_LIMIT_EXPR_DEPTH": 64, "SQLITE_LIMIT_COMPOUND_SELECT": 2,
               "SQLITE_LIMIT_TRIGGER_DEPTH": 1}

# Written for configuration the tidy table does not carry: llama-bench's own defaults.
_DEFAULTS = {"cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "n_cpu_moe": 0, "split_mode": "layer",
             "main_gpu": 0, "no_kv_offload": False, "devices": "auto", "tensor_split": "0.00",
             "tensor_buft_overrides": "none", "load_mode": "mmap", "use_mmap": True, "embeddings": False,
             "no_op_offload": 0, "no_host": False, "fit_target": 0, "fit_min_ctx": 0, "n_depth": 0,
             "model_type": "", "model_size": 0, "model_n_params": 0, "build_number": 0}


# ---------------------------------------------------------------------------------------- sniff

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


# ---------------------------------------------------------------------------------------- read

def rows(text: str, fmt: str, source_file: str) -> list[dict]:
    """Tidy sample rows (see harness.analysis.table) of a llama-bench output in format `fmt`.
    One row per sample of every test; a test without samples (avg_ts <= 0, empty arrays) is one
    failed row. Raises ValueError on an unknown format, a malformed file, or SQL that does anything
    but create the llama-bench table and insert into it."""
    if fmt not in FORMATS:
        raise ValueError(f"llama-bench format must be one of {FORMATS}, got {fmt!r}")
    records = {"llama-bench-json": _json_records, "llama-bench-jsonl": _jsonl_records,
               "llama-bench-csv": _csv_records, "llama-bench-sql": _sql_records}[fmt](text)
    out: list[dict] = []
    for i, rec in enumerate(records):
        try:
            out.extend(_test_rows(rec, i, fmt, source_file))
        except (TypeError, ValueError) as e:
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


_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
# The statement shapes llama-bench (and sqlite3's .dump of its table) print, and nothing else:
# plain `name TYPE` columns (no DEFAULT / CHECK / AS SELECT), one row of literal VALUES.
_ID = r'(?:\w+|"\w+")'
_LIT = r"(?:'[^']*(?:''[^']*)*'|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|NULL)"
_SQL_GRAMMAR = (
    ("create", re.compile(rf"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_ID}\s*\(\s*{_ID}(?:\s+\w+)?"
                          rf"(?:\s*,\s*{_ID}(?:\s+\w+)?)*\s*\)\s*;?\s*\Z", re.I)),
    ("insert", re.compile(rf"INSERT\s+INTO\s+{_ID}\s*(?:\(\s*{_ID}(?:\s*,\s*{_ID})*\s*\))?\s*VALUES\s*"
                          rf"\(\s*{_LIT}(?:\s*,\s*{_LIT})*\s*\)\s*;?\s*\Z", re.I)),
    ("transaction", re.compile(r"(?:BEGIN|COMMIT|END)(?:\s+TRANSACTION)?\s*;?\s*\Z", re.I)),
)


_SQL_SPECIAL = re.compile(r"['\";]|--|/\*")


def _sql_statements(text: str) -> list[str]:
    """Split a script at the semicolons outside quotes and comments (one linear scan)."""
    out, start, i, n = [], 0, 0, len(text)
    while (m := _SQL_SPECIAL.search(text, i)) is not None:
        tok, i = m.group(), m.end()
        if tok in ("'", '"'):
            j = text.find(tok, i)
            while j != -1 and text.startswith(tok, j + 1):  # '' inside a string is a quote
                j = text.find(tok, j + 2)
            i = n if j == -1 else j + 1
        elif tok == "--":
            j = text.find("\n", i)
            i = n if j == -1 else j + 1
        elif tok == "/*":
            j = text.find("*/", i)
            i = n if j == -1 else j + 2
        else:
            out.append(text[start:i])
            start = i
    if text[start:].strip():
        out.append(text[start:])
    return out


def _sql_records(text: str, max_steps: int | None = None) -> list[dict]:
    """Load llama-bench SQL into a private in-memory database and read the table back.

    Nothing in the text is trusted: each statement must have the shape llama-bench prints
    (CREATE TABLE of plain `name TYPE` columns, INSERT INTO ... VALUES of one row of literals,
    or BEGIN/COMMIT); then an authorizer allows only creating and inserting into llama_bench/test in the
    main database (no ATTACH, VACUUM INTO, PRAGMA, functions, sub-selects, reads, drops, triggers);
    sqlite limits forbid attached databases and cap string and statement sizes; a progress handler
    aborts after a bounded number of VM steps. Any refusal raises ValueError (no partial result)."""
    if len(text) > MAX_SQL_CHARS:
        raise ValueError(f"llama-bench sql: {len(text)} characters is over the limit of {MAX_SQL_CHARS}")
    budget = max_steps if max_steps is not None else SQL_STEPS_BASE + SQL_STEPS_PER_CHAR * len(text)
    stride = 16  # sqlite counts per statement run; llama-bench's INSERTs take ~50 steps
    state = {"steps": 0, "creating": False, "reading": False, "created": []}

    def progress() -> int:
        state["steps"] += stride
        return 1 if state["steps"] > budget else 0

    def authorize(action, arg1, arg2, db, _trigger) -> int:
        if action == sqlite3.SQLITE_TRANSACTION:
            return sqlite3.SQLITE_OK
        if state["reading"]:
            ok = action == sqlite3.SQLITE_SELECT or (
                action == sqlite3.SQLITE_READ and db == "main" and arg1 in SQL_TABLES_READ)
            return sqlite3.SQLITE_OK if ok else sqlite3.SQLITE_DENY
        if db not in ("main", None):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_CREATE_TABLE and arg1 in SQL_TABLES_READ and state["creating"]:
            state["created"].append(arg1)
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_INSERT and arg1 in SQL_TABLES_READ and db == "main":
            return sqlite3.SQLITE_OK
        # CREATE TABLE writes its own schema row; only then may sqlite_master be touched.
        if state["creating"] and arg1 in ("sqlite_master", "sqlite_schema") and db == "main" and action in (
                sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_READ):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for name, value in _SQL_LIMITS.items():
            conn.setlimit(getattr(sqlite3, name), value)
        conn.set_authorizer(authorize)
        conn.set_progress_handler(progress, stride)
        for n, stmt in enumerate(_sql_statements(text), 1):
            head = stmt[_LEADING_COMMENTS.match(stmt).end():]
            if not head.strip(" \t\r\n;"):
                continue
            kind = next((k for k, rx in _SQL_GRAMMAR if len(head) <= _SQL_LIMITS["SQLITE_LIMIT_SQL_LENGTH"]
                         and rx.match(head)), None)
            if kind is None:
                raise ValueError(f"llama-bench sql: statement {n} refused (only CREATE TABLE of plain columns "
                                 f"and INSERT INTO ... VALUES of literals): {head[:80]!r}")
            state["creating"] = kind == "create"
            try:
                conn.execute(stmt)
            except sqlite3.Error as e:
                why = "step budget exceeded" if state["steps"] > budget else str(e)
                raise ValueError(f"llama-bench sql: statement {n} refused ({why}): {head[:80]!r}") from None
            finally:
                state["creating"] = False
        state["reading"] = True
        out: list[dict] = []
        for name in dict.fromkeys(state["created"]):
            try:
                cur = conn.execute(f"SELECT * FROM {name}")  # name is one of SQL_TABLES_READ
                cols = [d[0] for d in cur.description]
                out.extend(dict(zip(cols, r)) for r in cur.fetchall())
            except sqlite3.Error as e:
                raise ValueError(f"llama-bench sql: reading table {name} failed ({e})") from None
        return out
    finally:
        conn.close()


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


def _engine_of(rec: dict) -> str | None:
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
        "engine": _engine_of(rec),
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


# ---------------------------------------------------------------------------------------- write

def dump(df, fmt: str) -> str:
    """A tidy frame (ours or imported) as llama-bench output in `fmt` (a FORMATS name, or the bare
    "json" | "jsonl" | "csv" | "sql"). Each run_id gives a pp test (its prefill samples) and a tg
    test (its decode samples); a run with neither but e2e samples gives a pp+tg test. Failed samples
    and runs without usable samples are left out (llama-bench has no way to say "failed")."""
    kind = fmt.removeprefix("llama-bench-")
    writers = {"json": _write_json, "jsonl": _write_jsonl, "csv": _write_csv, "sql": _write_sql}
    if kind not in writers:
        raise ValueError(f"llama-bench format must be one of {FORMATS}, got {fmt!r}")
    return writers[kind](tests(df))


def tests(df) -> list[dict]:
    """The llama-bench tests (dicts over FIELDS, typed as FIELD_TYPES says) of a tidy frame."""
    out: list[dict] = []
    ok = df[df["status"] == "ok"]
    for _, run in ok.groupby(ok["run_id"].fillna(""), sort=False, dropna=False):
        made = 0
        for n_prompt, grp in _groups(run, "n_prompt_tokens", ("prefill_tps", "prompt_eval_ms")):
            if n_prompt > 0:
                ts, ns = _pairs(grp["prefill_tps"], grp["prompt_eval_ms"], n_prompt)
                out.append(_test(grp.iloc[0], n_prompt, 0, ns, ts))
                made += 1
        for n_tokens, grp in _groups(run, "n_gen_tokens", ("decode_tps", "decode_ms")):
            if n_tokens >= 2:
                ts, ns = _pairs(grp["decode_tps"], grp["decode_ms"], n_tokens - 1)
                out.append(_test(grp.iloc[0], 0, n_tokens - 1, ns, ts))
                made += 1
        if not made:
            e2e = run[run["e2e_ms"].notna() & run["n_prompt_tokens"].notna() & run["n_gen_tokens"].notna()]
            for (n_prompt, n_tokens), grp in e2e.groupby(["n_prompt_tokens", "n_gen_tokens"], sort=False):
                n_gen = int(n_tokens) - 1
                if n_prompt > 0 and n_gen > 0:
                    ns = [float(x) * 1e6 for x in grp["e2e_ms"]]
                    ts = [1e9 * (int(n_prompt) + n_gen) / x for x in ns]
                    out.append(_test(grp.iloc[0], int(n_prompt), n_gen, ns, ts))
    return out


def _groups(run, count_col: str, metric_cols: tuple[str, str]):
    has = run[run[metric_cols[0]].notna() | run[metric_cols[1]].notna()]
    has = has[has[count_col].notna()]
    for n, grp in has.groupby(count_col, sort=False):
        yield int(n), grp


def _pairs(tps, ms, n_tokens: int) -> tuple[list[float], list[float]]:
    """(samples_ts, samples_ns) of one test; a missing one of the pair is derived from the other."""
    ts, ns = [], []
    for t, m in zip(tps, ms):
        t = None if t is None or math.isnan(t) else float(t)
        m = None if m is None or math.isnan(m) else float(m)
        ts.append(t if t is not None else n_tokens / (m / 1e3))
        ns.append(m * 1e6 if m is not None else 1e9 * n_tokens / t)
    return ts, ns


def _split_engine(engine) -> tuple[str, int, str | None]:
    """(build_commit, build_number, backends) of an engine string; inverse of _engine_of()."""
    if engine is None:
        return "unknown", 0, None
    m = re.fullmatch(r"llama\.cpp ([0-9a-fA-F]{6,40}|unknown)(?: \((\d+)\))?(?: (.+))?", str(engine))
    return (m.group(1), int(m.group(2) or 0), m.group(3)) if m else (str(engine), 0, None)


def _clean(v):
    import pandas as pd

    return None if v is None or pd.isna(v) else v


def _int_or(v, default: int) -> int:
    v = _clean(v)
    if v is None:
        return default
    try:
        return int(float(v))
    except ValueError:
        return default


def _test_time(v) -> str:
    v = _clean(v)
    if v is None:
        return ""
    try:
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return str(v)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _test(row, n_prompt: int, n_gen: int, ns: list[float], ts: list[float]) -> dict:
    hw = [x.strip() for x in str(_clean(row["hardware"]) or "").split(" | ")]
    commit, number, backends = _split_engine(_clean(row["engine"]))
    eff = _clean(row["n_gpu_layers_effective"])
    ngl = int(eff) if eff is not None else _int_or(
        {"all": -1, "auto": -1}.get(str(_clean(row["n_gpu_layers"])), row["n_gpu_layers"]), -1)
    fa = {"on": 1, "off": 0, "auto": -1}.get(str(_clean(row["flash_attn"])).lower(), -1)
    engine = str(_clean(row["engine"]) or "")
    cpu_only = "cpu" in engine.lower().split()  # our engine string says "cpu" for builds without GPU offload
    ns_int = [int(round(x)) for x in ns]
    test = dict(_DEFAULTS) | {
        "build_commit": commit, "build_number": number, "cpu_info": hw[0] if hw else "",
        "gpu_info": ", ".join(hw[1:]), "backends": backends or ("CPU" if cpu_only else ""),
        "model_filename": str(_clean(row["model"]) or ""), "n_batch": _int_or(row["n_batch"], 0),
        "n_ubatch": _int_or(row["n_ubatch"], 0), "n_threads": _int_or(row["n_threads"], 0),
        "type_k": str(_clean(row["type_k"]) or ""), "type_v": str(_clean(row["type_v"]) or ""),
        "n_gpu_layers": ngl, "flash_attn": fa, "n_prompt": n_prompt, "n_gen": n_gen,
        "test_time": _test_time(row["started_at"]),
        # llama-bench: uint64 mean (integer division) and sample std of ns; double mean/std of t/s
        "avg_ns": sum(ns_int) // len(ns_int), "stddev_ns": int(statistics.stdev(ns_int)) if len(ns_int) > 1 else 0,
        "avg_ts": statistics.fmean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "samples_ns": ns_int, "samples_ts": [float(x) for x in ts],
    }
    return {k: test[k] for k in FIELDS}


def _json_value(name: str, v) -> str:
    kind = FIELD_TYPES[name]
    if kind == "samples":
        return "[ " + ", ".join(json.dumps(x) for x in v) + " ]"
    if kind == "bool":
        return "true" if v else "false"
    return json.dumps(v)


def _write_json(tests_: list[dict]) -> str:
    objs = []
    for t in tests_:
        objs.append("  {\n" + ",\n".join(f'    "{k}": {_json_value(k, t[k])}' for k in FIELDS) + "\n  }")
    return "[\n" + ",\n".join(objs) + ("\n" if objs else "") + "]\n"


def _write_jsonl(tests_: list[dict]) -> str:
    return "".join("{" + ", ".join(f'"{k}": {_json_value(k, t[k])}' for k in FIELDS) + "}\n" for t in tests_)


def _text_value(name: str, v) -> str:
    """As llama-bench's get_values() prints a field: bools as 0/1, samples space-separated."""
    kind = FIELD_TYPES[name]
    if kind == "samples":
        return " ".join(repr(x) for x in v)
    if kind == "bool":
        return str(int(bool(v)))
    return repr(v) if isinstance(v, float) else str(v)


def _write_csv(tests_: list[dict]) -> str:
    # llama-bench: header unquoted, every value in double quotes with '"' doubled
    lines = [",".join(FIELDS)]
    for t in tests_:
        lines.append(",".join('"' + _text_value(k, t[k]).replace('"', '""') + '"' for k in FIELDS))
    return "\n".join(lines) + "\n"


def _write_sql(tests_: list[dict]) -> str:
    cols = ",\n".join(f"  {k} {_SQL_TYPES[FIELD_TYPES[k]]}" for k in FIELDS)
    out = [f"CREATE TABLE IF NOT EXISTS {SQL_TABLE} (\n{cols}\n);\n\n"]
    names = ", ".join(FIELDS)
    for t in tests_:
        values = ", ".join("'" + _text_value(k, t[k]).replace("'", "''") + "'" for k in FIELDS)
        out.append(f"INSERT INTO {SQL_TABLE} ({names}) VALUES ({values});\n")
    return "".join(out)
