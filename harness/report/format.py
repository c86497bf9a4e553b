"""How numbers, intervals and counts are written for people: report tables, the terminal, the
narrative's fact sheet. Pure functions of plain values; imports nothing of the harness.

    num(256.0) -> "256"         num(0.00123) -> "0.00123"     num(None) -> "-"
    interval(-2.705, 4.177, ".3f") -> "[-2.705, 4.177]"      interval(nan, 1.0) -> "n/a"
    plural(1, "configuration") -> "1 configuration"
"""

from __future__ import annotations

import math

MISSING = "-"  # a value that is not known
NO_CI = "n/a"  # an interval that cannot be computed (n < 2, unbounded)


def value(row, key):
    """row[key] (a dict or an object's attribute) with missing values (None, NaN, pandas NA) as
    None."""
    v = row.get(key) if isinstance(row, dict) else getattr(row, key, None)
    if v is None:
        return None
    try:
        return None if v != v else v  # NaN, pandas NA (its comparison raises)
    except (TypeError, ValueError):
        return None


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)
    except (TypeError, ValueError):
        return True


def num(v, digits: int = 1) -> str:
    """A number as the report shows it: integers (also 256.0) without decimals, thousands with
    separators, small numbers with 3 significant digits; MISSING for None/NaN, "inf" for
    infinities; strings and other values as str()."""
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, (int, float)):
        v = v.item()  # numpy scalar
    if _missing(v):
        return MISSING
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and abs(v) < 1e15:
            return num(int(v))
        if abs(v) >= 1e15:
            return f"{v:.3g}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 1 or v == 0 else f"{v:.3g}"
    return str(v)


def param(v) -> str:
    """A parameter value (n_ctx=256, temperature=0.2, n_gpu_layers=all): integers as integers,
    other numbers in their shortest exact form, MISSING when missing."""
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    if hasattr(v, "item") and not isinstance(v, (int, float)):
        v = v.item()
    if _missing(v):
        return MISSING
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def _fmt(x, spec: str | None) -> str:
    return num(x) if spec is None else format(x, spec)


def interval(lo, hi, spec: str | None = None) -> str:
    """A confidence interval written unambiguously, also for negative bounds: "[lo, hi]"; NO_CI
    when a bound is missing or not finite. `spec` is a format spec (".3f"); default num()."""
    if _missing(lo) or _missing(hi) or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return NO_CI
    return f"[{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def estimate(mean, lo, hi, spec: str | None = None) -> str:
    """"mean [lo, hi]", "mean [n/a]" without an interval, MISSING without a mean."""
    if _missing(mean):
        return MISSING
    return f"{_fmt(mean, spec)} {interval(lo, hi, spec) if not _missing(lo) and not _missing(hi) else '[' + NO_CI + ']'}"


def ci(row, metric: str) -> str:
    """The mean of `metric` in a configurations row with its 95% CI: "101.2 [98.0, 104.4]"."""
    mean, lo, hi = (value(row, f"{metric}_{s}") for s in ("mean", "ci95_low", "ci95_high"))
    return estimate(mean, lo, hi)


def plural(n, word: str, many: str | None = None) -> str:
    """"1 configuration", "2 configurations", "0 samples"; `many` for irregular plurals."""
    return f"{num(n)} {word if n == 1 else (many or word + 's')}"
