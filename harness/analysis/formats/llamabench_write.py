"""Writing a tidy frame (ours or imported) as llama-bench output, in each of its printers' exact
layout, so llama.cpp's `scripts/compare-llama-bench.py` reads our runs.

Only llama-bench's json/jsonl printers write `samples_ns` / `samples_ts`; we add them to csv and
sql too (space-separated numbers, as trailing columns) so that an export loses nothing;
compare-llama-bench.py ignores columns it does not know.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from datetime import datetime, timezone

import pandas as pd

from .llamabench_spec import DEFAULTS, FIELD_TYPES, FIELDS, FORMATS, SQL_TABLE, SQL_TYPES


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


def split_engine(engine) -> tuple[str, int, str | None]:
    """(build_commit, build_number, backends) of an engine string; inverse of llamabench_read.engine_of()."""
    if engine is None:
        return "unknown", 0, None
    m = re.fullmatch(r"llama\.cpp ([0-9a-fA-F]{6,40}|unknown)(?: \((\d+)\))?(?: (.+))?", str(engine))
    return (m.group(1), int(m.group(2) or 0), m.group(3)) if m else (str(engine), 0, None)


def _clean(v):
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
    commit, number, backends = split_engine(_clean(row["engine"]))
    eff = _clean(row["n_gpu_layers_effective"])
    ngl = int(eff) if eff is not None else _int_or(
        {"all": -1, "auto": -1}.get(str(_clean(row["n_gpu_layers"])), row["n_gpu_layers"]), -1)
    fa = {"on": 1, "off": 0, "auto": -1}.get(str(_clean(row["flash_attn"])).lower(), -1)
    engine = str(_clean(row["engine"]) or "")
    cpu_only = "cpu" in engine.lower().split()  # our engine string says "cpu" for builds without GPU offload
    ns_int = [int(round(x)) for x in ns]
    test = dict(DEFAULTS) | {
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
    cols = ",\n".join(f"  {k} {SQL_TYPES[FIELD_TYPES[k]]}" for k in FIELDS)
    out = [f"CREATE TABLE IF NOT EXISTS {SQL_TABLE} (\n{cols}\n);\n\n"]
    names = ", ".join(FIELDS)
    for t in tests_:
        values = ", ".join("'" + _text_value(k, t[k]).replace("'", "''") + "'" for k in FIELDS)
        out.append(f"INSERT INTO {SQL_TABLE} ({names}) VALUES ({values});\n")
    return "".join(out)
