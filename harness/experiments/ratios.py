"""B/A ratios of two sample sets with the semantics of `harness compare`: ratio of means, its
Fieller 95% CI, Welch's p, and significance (p < alpha and |ratio - 1| >= the minimum effect).

The samples are handed to analysis.compare.compare() as two one-configuration tidy tables, so an
experiment's comparison and `harness compare` can never disagree on how a ratio is judged.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from ..analysis.compare import MIN_EFFECT, compare

# Columns compare() reads besides the metrics; equal on both sides, so that the two sets are
# matched as one configuration ("all samples").
_SAME = {"status": "ok", "model": "m", "hardware": "h", "model_sha256": "s", "engine": "e"}


def _frame(samples: Mapping[str, Sequence[float | None]]):
    import pandas as pd

    n = max((len(v) for v in samples.values()), default=0)
    cols = {m: [(float(x) if x is not None and math.isfinite(x) else float("nan")) for x in v]
            + [float("nan")] * (n - len(v)) for m, v in samples.items()}
    df = pd.DataFrame(cols)
    for k, v in _SAME.items():
        df[k] = v
    df["run_id"] = [f"r{i}" for i in range(n)]  # every sample is its own run (run-level metrics)
    return df


def ratio_rows(a: Mapping[str, Sequence[float | None]], b: Mapping[str, Sequence[float | None]],
               metrics: Sequence[str], alpha: float = 0.05, min_effect: float = MIN_EFFECT) -> dict[str, dict]:
    """metric -> compare row (mean_a, mean_b, ratio, ratio_ci95_low/high, p_value, significant,
    direction, note, n_a, n_b) of B relative to A. Metrics without a value on a side are absent.
    None and non-finite samples are left out, never counted as zero."""
    res = compare(_frame(a), _frame(b), metrics=tuple(metrics), alpha=alpha, min_effect=min_effect)
    keep = ("metric", "n_a", "n_b", "mean_a", "mean_b", "ratio", "ratio_ci95_low", "ratio_ci95_high",
            "ci_method", "p_value", "significant", "direction", "min_effect", "note")
    return {r["metric"]: {k: r[k] for k in keep} for r in res.rows}
