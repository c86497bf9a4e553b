"""What a reader hands to ingest for one file: its sample rows (an iterable, so large files stream),
the pre-aggregated values it claims, and notes about how it was read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import registry
from . import table

#: Units of the aggregate table's metrics that are not sample columns: a request's mean ITL and
#: TPOT, and a server's throughputs (all requests together over the run's duration).
AGG_UNITS = {"itl_ms": "ms", "tpot_ms": "ms", "ttst_ms": "ms", "request_throughput": "req/s",
             "output_throughput": "tok/s", "e2e_tps": "tok/s"}


@dataclass
class Reading:
    """One file as read: `fmt` (its source_format), `rows` (tidy sample rows, consumed once),
    `aggregates` (rows of table.AGGREGATE_COLUMNS: values the file states about requests it does
    not list) and `notes` (facts about the file: pre-aggregated values, unit guesses, unknown
    columns, dropped lines). Readers may append notes while `rows` is consumed."""

    fmt: str
    rows: Iterable[dict] = ()
    aggregates: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self) -> str | None:
        seen = list(dict.fromkeys(n for n in self.notes if n))
        return "; ".join(seen) or None


def unit_of(metric: str) -> str:
    if metric in registry.BY_NAME:
        return registry.BY_NAME[metric].unit
    return AGG_UNITS.get(metric, "")


def claim(base: dict, metric: str, stat: str, value: Any, n_claimed: Any = None, note: str | None = None
          ) -> dict | None:
    """One aggregate row: `base` (source, identity, parameters) + what is claimed. None when the
    value is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if math.isnan(x):
        return None
    row = dict.fromkeys(table.AGGREGATE_COLUMNS)
    row.update({k: v for k, v in base.items() if k in row})
    row.update(metric=metric, stat=stat, value=x, unit=unit_of(metric), n_claimed=n_claimed, note=note)
    return row


def check_aggregates(rows: list[dict], source: str) -> tuple[list[dict], list[str]]:
    """(kept, warnings): aggregate values that cannot be measurements (not finite, negative, above
    the registry's bound for their metric) are rejected, counted per (metric, reason)."""
    kept, bad, first = [], {}, {}
    for r in rows:
        name = r["metric"] if r["metric"] in registry.BY_NAME else ("itl_p50_ms" if r["metric"] == "itl_ms" else None)
        why = None
        if not math.isfinite(r["value"]):
            why = "not finite"
        elif name is not None and r["stat"] != "total":
            why = registry.implausible(name, r["value"])
        elif r["value"] < 0:
            why = "negative"
        if why is None:
            kept.append(r)
            continue
        key = (r["metric"], why)
        bad[key] = bad.get(key, 0) + 1
        first.setdefault(key, r["value"])
    warnings = [f"{source}: aggregate {m} {why} in {n} value{'s' if n > 1 else ''} (first: {first[(m, why)]:g}): "
                f"rejected, not a measurement" for (m, why), n in bad.items()]
    return kept, warnings
