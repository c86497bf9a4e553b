"""The best configuration per objective, and the Pareto front, within each group.

Both work on the table of stats.configurations() and never compare configurations of different
groups (hardware_group: hardware, model, model hash, engine). A "best" that the runner-up's
confidence interval overlaps is reported as not clear: the ranking between them is noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: (objective name, configurations column, "max" | "min")
OBJECTIVES = (("max decode_tps", "decode_tps_mean", "max"),
              ("min ttft_ms", "ttft_ms_mean", "min"),
              ("min energy_per_token_j", "energy_per_token_j_mean", "min"))
PARETO_OBJECTIVES = (("decode_tps_mean", "max"), ("ttft_ms_mean", "min"), ("vram_used_mib_mean", "min"))


def plain(value):
    """A configurations cell as a plain Python value (None for missing, float/int/bool/str)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def row_dict(row: pd.Series) -> dict:
    return {k: plain(v) for k, v in row.items()}


def best(configs_df: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """{hardware_group: {objective: row}} for the objectives of OBJECTIVES that have data there.

    Each row is the winning configuration as a dict (every column of configs_df, missing values as
    None) plus:
      objective (e.g. "max decode_tps"), metric (the column ranked, e.g. "decode_tps_mean"),
      value (its value), clear (bool: the 95% CIs of the best and the runner-up do not overlap;
        True when there is no runner-up; False when either CI is unknown, n < 2),
      runner_up (the runner-up's row dict, or None), note (one sentence saying why clear or not).
    Configurations without a value for the metric (e.g. only failed samples) are not ranked.
    """
    out: dict[str, dict[str, dict]] = {}
    if configs_df.empty:
        return out
    for group, sub in configs_df.groupby("hardware_group", sort=True):
        per: dict[str, dict] = {}
        for name, col, sense in OBJECTIVES:
            if col not in sub.columns:
                continue
            s = sub.loc[sub[col].notna()]
            if s.empty:
                continue
            s = s.sort_values(col, ascending=(sense == "min"), kind="stable")
            top = s.iloc[0]
            runner = s.iloc[1] if len(s) > 1 else None
            clear, note = _clear(top, runner, col[: -len("_mean")])
            per[name] = row_dict(top) | {"objective": name, "metric": col, "value": float(top[col]),
                                         "clear": clear,
                                         "runner_up": None if runner is None else row_dict(runner),
                                         "note": note}
        if per:
            out[str(group)] = per
    return out


def _clear(top: pd.Series, runner: pd.Series | None, metric: str) -> tuple[bool, str]:
    if runner is None:
        return True, "the only configuration with data"
    lo, hi = f"{metric}_ci95_low", f"{metric}_ci95_high"
    vals = [plain(top.get(lo)), plain(top.get(hi)), plain(runner.get(lo)), plain(runner.get(hi))]
    if any(v is None for v in vals):
        return False, "not distinguishable from the runner-up: a 95% CI is unknown (n < 2)"
    t_lo, t_hi, r_lo, r_hi = vals
    if t_lo <= r_hi and r_lo <= t_hi:
        return False, "not distinguishable from the runner-up: their 95% CIs overlap"
    return True, "better than the runner-up: their 95% CIs do not overlap"


def pareto(configs_df: pd.DataFrame, objectives=PARETO_OBJECTIVES) -> pd.DataFrame:
    """The non-dominated configurations of each hardware_group, as rows of configs_df plus a
    column `pareto_objectives` ("max decode_tps_mean, min ttft_ms_mean", the objectives used).

    An objective whose column is missing or all-NaN in a group is dropped from that group's
    comparison; configurations missing a value of a used objective are left out (they cannot be
    placed). Ties (equal on every objective) are all kept. Raises ValueError on a sense that is
    not "max" or "min".
    """
    for col, sense in objectives:
        if sense not in ("max", "min"):
            raise ValueError(f"pareto objective {col!r}: sense must be 'max' or 'min', got {sense!r}")
    parts = []
    if not configs_df.empty:
        for _, sub in configs_df.groupby("hardware_group", sort=True):
            used = [(c, s) for c, s in objectives if c in sub.columns and sub[c].notna().any()]
            if not used:
                continue
            cand = sub.dropna(subset=[c for c, _ in used])
            x = np.column_stack([cand[c].to_numpy(dtype=float) * (1.0 if s == "max" else -1.0)
                                 for c, s in used])
            part = cand.loc[non_dominated(x)].copy()
            part["pareto_objectives"] = ", ".join(f"{s} {c}" for c, s in used)
            parts.append(part)
    if not parts:
        return configs_df.iloc[0:0].assign(pareto_objectives=pd.Series(dtype=object))
    return pd.concat(parts).reset_index(drop=True)


def non_dominated(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of x (n points x k objectives, all maximised) that no other row
    dominates (>= everywhere and > somewhere).

    One sweep in lexicographically descending order: a dominator always sorts before the points it
    dominates, and a dominated point is always dominated by some point of the front too, so each
    point is checked against the front found so far only."""
    n, k = x.shape
    keep = np.zeros(n, dtype=bool)
    front = np.empty((n, k))
    size = 0
    for i in np.lexsort(tuple(-x[:, j] for j in reversed(range(k)))):
        p = x[i]
        if size:
            f = front[:size]
            if np.any(np.all(f >= p, axis=1) & np.any(f > p, axis=1)):
                continue
        front[size] = p
        size += 1
        keep[i] = True
    return keep
