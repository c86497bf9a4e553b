"""The tidy sample rows of a run, embedded in another tool's record so an export loses nothing.

A llama-bench test (json/jsonl objects, csv/sql columns) or a pytest-benchmark benchmark holds what
that tool can say: averages, a test shape, one timed metric. The `harness` field we add beside it
holds the run's own rows, which that tool's readers ignore and ours read back instead:

    {"v": 1, "runs": [{"run": {column: value, ...},      # equal on every row of the run
                       "rows": [{column: value, ...}]}]}  # the rest, one object per sample

Columns are those of `table.COLUMNS` (source_format and source_file excepted: the reader sets them
to the file it reads); a missing column is missing (NaN / None). Values are JSON scalars, floats
written by repr, so they come back bit for bit. One record may carry several runs, and the same
run may be carried by several records (a run's prompt and generation tests): readers keep the
first copy of each run (`Seen`).
"""

from __future__ import annotations

import math
from typing import Any

from .. import table

KEY = "harness"
VERSION = 1
#: Columns carried (the reader sets source_format / source_file itself).
CARRIED = tuple(n for n in table.NAMES if n not in ("source_format", "source_file"))
_CARRIED = frozenset(CARRIED)


def json_scalar(v) -> Any:
    """A JSON scalar, or None for missing (None, NA, NaN) and non-finite values."""
    if v is None:
        return None
    try:
        if v != v:  # NaN, pd.NA raises TypeError in a bool context
            return None
    except TypeError:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def pack_run(run) -> dict:
    """{"run": ..., "rows": [...]} of one run's tidy rows (a DataFrame slice)."""
    records = [{c: json_scalar(v) for c, v in zip(CARRIED, vals)} for vals in run[list(CARRIED)].itertuples(index=False)]
    common = {}
    for c in CARRIED:
        vals = [r[c] for r in records]
        if vals and vals[0] is not None and all(type(v) is type(vals[0]) and v == vals[0] for v in vals):
            common[c] = vals[0]
    rows = [{c: v for c, v in r.items() if c not in common and v is not None} for r in records]
    return {"run": common, "rows": rows}


def pack(runs) -> dict:
    """The `harness` field of a record that carries `runs` (DataFrame slices, one per run)."""
    return {"v": VERSION, "runs": [pack_run(r) for r in runs]}


class Seen:
    """The runs already read from one file, so a run carried twice is read once."""

    def __init__(self):
        self.keys: set[str] = set()

    def first(self, run: dict) -> bool:
        """True the first time a run (by run_id, else by its content) is offered."""
        key = str(run["run"].get("run_id")) if run["run"].get("run_id") is not None else repr(run)
        if key in self.keys:
            return False
        self.keys.add(key)
        return True


def _check(obj, what: str) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{KEY} field: {what} is not an object")
    for k, v in obj.items():
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise ValueError(f"{KEY} field: {what}.{k} is not a number, text or boolean")
    return obj


def unpack(obj, source_format: str, source_file: str, seen: Seen | None = None) -> list[dict]:
    """The tidy rows a `harness` field carries (runs already in `seen` left out). Columns this
    version does not know are ignored. Raises ValueError when the field is not of this shape."""
    if not isinstance(obj, dict) or obj.get("v") != VERSION or not isinstance(obj.get("runs"), list):
        raise ValueError(f"{KEY} field: expected {{\"v\": {VERSION}, \"runs\": [...]}}")
    out: list[dict] = []
    for i, run in enumerate(obj["runs"]):
        if not isinstance(run, dict) or not isinstance(run.get("rows"), list):
            raise ValueError(f"{KEY} field: run {i} has no rows list")
        common = _check(run.get("run", {}), f"runs[{i}].run")
        if seen is not None and not seen.first({"run": common, "rows": run["rows"]}):
            continue
        base = table.empty_row() | {k: v for k, v in common.items() if k in _CARRIED}
        base |= {"source_format": source_format, "source_file": source_file}
        for j, row in enumerate(run["rows"]):
            _check(row, f"runs[{i}].rows[{j}]")
            out.append(base | {k: v for k, v in row.items() if k in _CARRIED})
    return out


def pytest_benchmark_rows(doc: dict, source_file: str, source_format: str = "pytest-benchmark") -> list[dict] | None:
    """The tidy rows of a pytest-benchmark document written by `harness export`: those carried in
    each benchmark's extra_info and at the top of the document. None when no benchmark carries
    any (a document from pytest-benchmark itself): read it as pytest-benchmark's."""
    benches = [b for b in doc.get("benchmarks") or () if isinstance(b, dict)]
    extras = [b.get("extra_info") for b in benches]
    carried = [e[KEY] for e in extras if isinstance(e, dict) and e.get(KEY) is not None]
    if doc.get(KEY) is not None:
        carried.append(doc[KEY])
    if not carried:
        return None
    seen = Seen()
    return [r for c in carried for r in unpack(c, source_format, source_file, seen)]
