"""From the rows a reader produced to rows of the tidy table: what is data and what is not.

- Implausible values are not data: a metric value that is not finite, negative where the quantity
  cannot be, or above the registry's plausibility bound (harness.registry: 1e308 tok/s, a negative
  duration) is dropped and reported, once per file, metric and reason, in the ingest's warnings.
- Junk is not data: a row that carries an error, or whose metrics are all zero or empty, becomes a
  failed row with its metrics missing, so it is counted as a failure and never averaged as 0.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from .. import registry
from . import table

#: Columns checked against the registry's bounds: the table's metrics and the prompt length.
CHECKED = (*table.METRICS, "n_prompt_tokens")
_NO_ERROR = frozenset({"", "none", "nan", "null"})


def error_text(v: Any) -> str | None:
    """The error a row states, or None for the spellings of "no error" ("", none, nan, null)."""
    if v is None:
        return None
    s = str(v).strip()
    return None if s.lower() in _NO_ERROR else s


def as_float(v: Any) -> float | None:
    """A row value as a float (inf for a number too large for one), or None when it is not a
    number (missing, text, bool)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


class Normaliser:
    """The rules above for the rows of one file, fed in chunks (large files stream): `apply` each
    chunk, then `warnings()` once. `n_rejected` counts rows that lost a value as implausible."""

    def __init__(self, source: str):
        self.source = source
        self.dropped: Counter = Counter()
        self.first: dict[tuple[str, str], float] = {}
        self.n_rejected = 0

    def apply(self, rows: list[dict]) -> list[dict]:
        for row in rows:
            reasons = []
            for m in CHECKED:
                v = row.get(m)
                if v is None:
                    continue
                x = as_float(v)
                if x is None:
                    continue
                why = registry.implausible(m, x)
                if why is not None:
                    row[m] = None
                    self.dropped[(m, why)] += 1
                    self.first.setdefault((m, why), x)
                    reasons.append(f"{m} {why}")
            if reasons:
                self.n_rejected += 1
            _junk_rule(row, reasons)
        return rows

    def warnings(self) -> list[str]:
        return [f"{self.source}: {m} {why} in {n} row{'s' if n > 1 else ''} (first: {self.first[(m, why)]:g}): "
                f"dropped, not a measurement" for (m, why), n in self.dropped.items()]


def normalise(rows: list[dict], source: str) -> tuple[list[dict], list[str]]:
    """(rows, warnings): the rows of one file with implausible values dropped and the junk rule
    applied, in place; one warning per (metric, reason) that dropped values, naming `source`."""
    n = Normaliser(source)
    return n.apply(rows), n.warnings()


def _junk_rule(row: dict, implausible: list[str]) -> None:
    err = error_text(row.get("error"))
    if err is None and row.get("status") != "failed" and any(as_float(row.get(m)) for m in table.METRICS):
        row["status"], row["error"] = "ok", None
        return
    if err is None:
        if row.get("status") == "failed":
            err = "failed (no error text)"
        elif implausible:
            err = "no plausible metric value (" + "; ".join(implausible) + ")"
        else:
            err = "all metrics zero"
    row["status"], row["error"] = "failed", err
    for m in table.METRICS:
        row[m] = None
