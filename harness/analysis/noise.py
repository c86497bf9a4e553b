"""How much a sweep's numbers can be trusted: its drift and its noise floor, from what the same
sweep measured.

- **Control drift** (<sweep>/drift.json, harness.launcher): the sweep's first point re-measured at
  the start and end of every round. Per metric, a least-squares line through the control's
  values against execution order gives the change over the whole sweep, relative to the control's
  mean, with a 95% t-interval from the slope's standard error.
- **Trend against execution order**: every ok sample that knows its place in the order (bench
  rounds), relative to its configuration's mean, regressed on the order (slope test, p-value).
  A trend that exists means the order of a sweep matters; rounds and blocking keep it out of the
  effects, and this says how large it was.
- **Minimum detectable effect** per metric: the smallest relative difference between two
  configurations this sweep could detect (two-sided alpha 0.05, power 0.8, Welch-type) given the
  coefficient of variation (CV, root mean square over configurations with at least 2 samples) and
  the median number of samples per configuration, and the repetitions a 2% difference would need.
- **Calibrated noise floor** (`harness calibrate`): this machine's A/A CV on the default model,
  stored in the harness cache, cited next to the sweep's own figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special

ALPHA, POWER = 0.05, 0.8
TARGET_EFFECT = 0.02  # the difference the "repetitions needed" column is for
DRIFT_FILE = "drift.json"
METRICS = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms")
MAX_DRIFT_FILES = 1000


def find_drift(roots: list[Path]) -> list[tuple[Path, dict]]:
    """The drift.json documents under the analysed paths (a sweep folder or a folder of sweeps)."""
    out = []
    for root in roots:
        root = Path(root)
        cands = [root / DRIFT_FILE] if root.is_dir() else []
        if root.is_dir():
            cands += sorted(root.glob(f"*/{DRIFT_FILE}"))[:MAX_DRIFT_FILES]
        for p in cands:
            try:
                if p.is_file() and p.stat().st_size < 2**20:
                    doc = json.loads(p.read_text())
                    if isinstance(doc, dict) and isinstance(doc.get("samples"), list):
                        out.append((p.parent, doc))
            except (OSError, ValueError):
                continue  # a broken file is no drift record; the sweep's samples stand
    return list({str(p): (p, d) for p, d in out}.values())


def line_fit(x, y) -> dict | None:
    """Least-squares line of y on x: slope, intercept, slope standard error, p-value of the slope
    (t-test, n - 2 degrees of freedom). None with fewer than 3 points or no spread in x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return None
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    df = x.size - 2
    s2 = float((resid ** 2).sum() / df)
    se = math.sqrt(s2 / sxx) if s2 > 0 else 0.0
    if se == 0:
        p = 0.0 if slope != 0 else 1.0
    else:
        p = float(2 * special.stdtr(df, -abs(slope / se)))
    return {"slope": slope, "intercept": float(intercept), "se": se, "df": df, "p": p, "n": int(x.size),
            "x_span": float(np.ptp(x))}


def control_drift(doc: dict) -> dict[str, dict]:
    """Per metric: the control's change over the sweep relative to its mean (`rel`, with a 95%
    interval `rel_ci`), its first-round and last-round means, the number of control samples."""
    samples = [s for s in doc.get("samples") or [] if isinstance(s, dict)]
    out: dict[str, dict] = {}
    for m in METRICS:
        pts = [(s.get("order"), s.get(m)) for s in samples
               if isinstance(s.get("order"), (int, float)) and isinstance(s.get(m), (int, float))
               and math.isfinite(s.get(m))]
        if len(pts) < 2:
            continue
        x, y = zip(*pts)
        mean = float(np.mean(y))
        rounds = sorted({s.get("round") for s in samples if s.get("round") is not None})
        first = [s[m] for s in samples if s.get("round") == rounds[0] and isinstance(s.get(m), (int, float))] if rounds else []
        last = [s[m] for s in samples if s.get("round") == rounds[-1] and isinstance(s.get(m), (int, float))] if rounds else []
        fit = line_fit(x, y)
        row = {"n": len(pts), "mean": mean, "first_round_mean": float(np.mean(first)) if first else None,
               "last_round_mean": float(np.mean(last)) if last else None, "rel": None, "rel_ci": (None, None),
               "p": None}
        if fit is not None and mean:
            change = fit["slope"] * fit["x_span"]
            half = float(special.stdtrit(fit["df"], 0.975)) * fit["se"] * fit["x_span"]
            row.update(rel=change / mean, rel_ci=((change - half) / mean, (change + half) / mean), p=fit["p"])
        elif first and last and mean:
            row["rel"] = (row["last_round_mean"] - row["first_round_mean"]) / mean
        out[m] = row
    return out


def order_trend(df: pd.DataFrame, metric: str) -> dict | None:
    """The trend of `metric` against execution order over ok samples that know their order,
    each relative to its configuration's mean: change over the sweep (relative), p of the slope."""
    from .stats import config_keys, ok_mask

    if "order" not in df.columns or metric not in df.columns:
        return None
    ok = ok_mask(df) & df["order"].notna() & df[metric].notna()
    d = df.loc[ok]
    if len(d) < 4:
        return None
    keys = config_keys(df)[ok]
    v = d[metric].astype(float)
    mean = v.groupby(keys.values).transform("mean")
    rel = (v / mean - 1).where(mean != 0)
    fit = line_fit(d["order"].astype(float), rel)
    if fit is None:
        return None
    return {"rel": fit["slope"] * fit["x_span"], "p": fit["p"], "n": fit["n"]}


def mde(cv: float, n: float) -> float | None:
    """Minimum detectable relative difference between two configurations with `n` samples each
    and coefficient of variation `cv` (two-sided ALPHA, POWER, t quantiles with 2n - 2 df)."""
    if not (cv is not None and math.isfinite(cv) and n and n >= 2):
        return None
    df = 2 * n - 2
    return float((special.stdtrit(df, 1 - ALPHA / 2) + special.stdtrit(df, POWER)) * cv * math.sqrt(2 / n))


def reps_for(cv: float, effect: float = TARGET_EFFECT) -> int | None:
    """Samples per configuration to detect a relative difference `effect` (normal approximation,
    at least 2)."""
    if not (cv is not None and math.isfinite(cv)) or effect <= 0:
        return None
    z = special.ndtri(1 - ALPHA / 2) + special.ndtri(POWER)
    return max(2, math.ceil(2 * (z * cv / effect) ** 2))


def noise_floor(df: pd.DataFrame, metrics=METRICS) -> dict[str, dict]:
    """Per metric: cv (RMS over configurations with >= 2 samples), n (median samples per
    configuration), mde (relative), reps_for_2pct."""
    from .stats import config_keys, ok_mask

    ok = ok_mask(df)
    keys = config_keys(df)[ok]
    d = df.loc[ok]
    out = {}
    for m in metrics:
        if m not in d.columns or not d[m].notna().any():
            continue
        g = d[m].astype(float).groupby(keys.values)
        n = g.count()
        cvs = (g.std(ddof=1) / g.mean()).where(n >= 2).dropna()
        cvs = cvs[np.isfinite(cvs)]
        if cvs.empty:
            continue
        cv = float(math.sqrt((cvs ** 2).mean()))
        nm = float(n[n >= 1].median())
        out[m] = {"cv": cv, "n": nm, "mde": mde(cv, nm), "reps_for_2pct": reps_for(cv)}
    return out


def assess(df: pd.DataFrame, roots: list[Path]) -> dict:
    """Everything this module says about one analysis: control drift per sweep, trends against
    order, the noise floor, the calibrated floor of this machine when there is one, and the drift
    floor per metric (the magnitude an effect must exceed)."""
    drift = [{"sweep": str(p), "rounds": d.get("rounds"), "control": d.get("control", {}).get("overrides"),
              "metrics": control_drift(d)} for p, d in find_drift(roots)]
    trends = {m: t for m in METRICS if (t := order_trend(df, m)) is not None}
    floor: dict[str, float] = {}
    for m in METRICS:
        mags = [abs(x["metrics"][m]["rel"]) for x in drift if m in x["metrics"] and x["metrics"][m]["rel"] is not None]
        t = trends.get(m)
        if t is not None and t["p"] < ALPHA:
            mags.append(abs(t["rel"]))
        if mags:
            floor[m] = max(mags)
    return {"drift": drift, "trends": trends, "noise": noise_floor(df), "floor": floor,
            "calibrated": calibrated()}


# --- the calibrated noise floor of this machine -----------------------------------------------------

def calibration_path() -> Path:
    from ..modelfile import cache_dir

    return Path(cache_dir()) / "noise_floor.json"


def calibrated() -> dict | None:
    """The stored result of `harness calibrate`, or None."""
    try:
        doc = json.loads(calibration_path().read_text())
        return doc if isinstance(doc, dict) and isinstance(doc.get("metrics"), dict) else None
    except (OSError, ValueError):  # none stored, or unreadable: reports go without it
        return None
