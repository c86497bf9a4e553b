"""Per-configuration statistics of the tidy sample table (harness.analysis.table).

A *configuration* is what was effectively measured, within one group (hardware, model, model hash,
engine: never pooled across). Two requests that the engine turned into the same thing (offload of
40 and of 999 layers on an 18-layer model: both offload 19) are one configuration, not two, so the
noise between them can never be reported as a finding.

Failed samples are counted (``n_failed``), never averaged in. Run-level metrics (measured once per
run and repeated on each of its samples: load time, energy per token, VRAM, utilisation, power,
bandwidth efficiency) are reduced to one value per run before any statistic, so five copies of one
reading do not pass for five measurements.

The statistics are those of :func:`harness.metrics.summarize` (sample std, CV = std / mean, 95%
t-interval of the mean, none of them for n < 2), computed with one pandas groupby instead of one
call per configuration: a table of 10,000 runs must summarise in well under a second. One
difference: the interval of a quantity that cannot be negative (times, rates, energies, counts,
percentages: `non_negative`) is clipped at zero. The t-interval only reaches below zero when a few
samples are very spread out (n = 3 with a CV above ~40%); no interval method is informative there,
the configuration is flagged noisy, and a negative bound for a time would only mislead.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from .. import registry
from . import table

#: Metrics measured once per run (see their docs in table.COLUMNS); analysed with the run as unit.
RUN_LEVEL_METRICS = registry.RUN_LEVEL_METRICS
#: A configuration is noisy when the CV of one of these exceeds NOISE_CV, or it has < MIN_SAMPLES.
NOISE_METRICS = registry.NOISE_METRICS
NOISE_CV = 0.05
MIN_SAMPLES = 3
#: The statistics columns written for each metric, as ``<metric>_<stat>``.
STAT_FIELDS = ("n", "mean", "median", "std", "cv", "ci95_low", "ci95_high", "min", "max")
#: Requested parameter -> the effective one that replaces it when known.
EFFECTIVE_OF = {"n_gpu_layers": "n_gpu_layers_effective", "n_ctx": "n_ctx_effective"}
# Above this magnitude a column is summarised scaled (see summary_frame).
_SCALE_ABOVE = 1e150
# effective_id is the identity of a configuration, not a parameter one varies.
_NOT_VARIED = ("effective_id",)


def non_negative(metric: str) -> bool:
    """True when `metric` (or a statistic column of it, decode_tps_mean) is a quantity that cannot
    be negative, so neither can a bound of its confidence interval. The metric registry decides;
    a name it does not know is judged by its unit suffix."""
    base = registry.base_metric(metric)
    if base is not None:
        return registry.BY_NAME[base].non_negative
    return metric.endswith(("_ms", "_s", "_ns", "_tps", "_j", "_w", "_pct", "_mib", "_tokens"))


def clip_interval(metric: str, low, high):
    """(low, high) of a 95% CI of `metric`, the lower bound clipped at 0 for a non-negative one
    (arrays or scalars; NaN stays NaN)."""
    if non_negative(metric):
        low = np.maximum(low, 0.0) if not isinstance(low, pd.Series) else low.clip(lower=0.0)
    return low, high


def ok_mask(df: pd.DataFrame) -> pd.Series:
    """True for samples with status "ok"; anything else (failed, missing) is not data."""
    return (df["status"] == "ok").fillna(False).astype(bool)


def varying_params(df: pd.DataFrame, include_failed: bool = False) -> list[str]:
    """The PARAMS columns (effective_id excluded) with more than one distinct non-missing value
    among the ok samples (among all samples with include_failed), in table order."""
    rows = df if include_failed else df.loc[ok_mask(df)]
    return [p for p in table.PARAMS if p not in _NOT_VARIED and p in rows.columns
            and rows[p].nunique(dropna=True) > 1]


def natural_key(value) -> tuple:
    """Sort key for parameter levels: numbers (also numeric strings like "40") numerically first,
    then other strings ("50%", "all") alphabetically, missing last."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return (2, 0.0, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def config_keys(df: pd.DataFrame, varying: list[str] | None = None) -> pd.Series:
    """One string per row naming its effective configuration inside its group (group keys are not
    part of it): ``e:<effective_id>`` when the row has one, else ``p:<n>`` for the combination of
    the varying parameters, with n_gpu_layers / n_ctx replaced by their effective values where
    those are known."""
    varying = varying_params(df) if varying is None else varying
    keys = pd.DataFrame(index=df.index)
    for p in varying:
        s = df[p].astype(object)
        eff = EFFECTIVE_OF.get(p)
        if eff is not None and eff in df.columns:
            known = df[eff].notna().to_numpy()
            s = s.where(~known, "<effective>")
            keys[eff] = df[eff].astype(object)  # present even when constant, so masking is safe
        keys[p] = s
    if keys.shape[1]:
        codes = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().astype(str)
    else:
        codes = pd.Series("0", index=df.index)
    eid = df["effective_id"]
    return pd.Series(np.where(eid.notna().to_numpy(), "e:" + eid.astype(object).fillna("").astype(str),
                              "p:" + codes), index=df.index)


def group_label(hardware, model, model_sha256, engine) -> str:
    """A readable name of one group: 'hardware; model (sha 0123456789ab); engine'."""
    def s(x):
        return None if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) else str(x)

    m = s(model) or "unknown model"
    if s(model_sha256):
        m += f" (sha {s(model_sha256)[:12]})"
    return "; ".join((s(hardware) or "unknown hardware", m, s(engine) or "unknown engine"))


def run_keys(df: pd.DataFrame) -> pd.Series:
    """The run each row belongs to: run_id, or the row itself when run_id is missing."""
    rid = df["run_id"].astype(object)
    return rid.where(rid.notna(), "row:" + pd.Series(df.index, index=df.index).astype(str))


def summary_frame(values: pd.DataFrame, by: pd.Series | np.ndarray) -> pd.DataFrame:
    """Vectorised summarize(): ``<col>_<stat>`` for stat in STAT_FIELDS, one row per `by` value.

    NaN and +-inf are left out (never counted as zero). std, cv and the CI are NaN for n < 2; cv is
    NaN when the mean is 0."""
    v = values.replace([np.inf, -np.inf], np.nan)
    # Columns with values near the float limit are summarised scaled down (sums and squares of
    # 1e308 overflow); every statistic scales back exactly. Ordinary data is not touched.
    big = v.abs().max()
    scale = big.where(big > _SCALE_ABOVE, 1.0).fillna(1.0)
    agg = (v / scale).groupby(by).agg(["count", "mean", "median", "std", "min", "max"])
    out = {}
    for c in values.columns:
        k = float(scale[c])
        n = agg[(c, "count")].astype("int64")
        mean, std = agg[(c, "mean")], agg[(c, "std")]
        std = std.where(n >= 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            tq = special.stdtrit(np.maximum(n.to_numpy() - 1, 1), 0.975)
            half = tq * std / np.sqrt(n)
            cv = (std / mean).where(mean != 0)
        lo, hi = mean - half, mean + half
        out[f"{c}_n"] = n
        out[f"{c}_mean"] = mean.where(n > 0) * k
        out[f"{c}_median"] = agg[(c, "median")] * k
        out[f"{c}_std"] = std * k
        out[f"{c}_cv"] = cv
        # beyond the float range (scaled back): no interval rather than an infinite one
        lo, hi = (lo * k).where(lambda x: np.isfinite(x)), (hi * k).where(lambda x: np.isfinite(x))
        out[f"{c}_ci95_low"], out[f"{c}_ci95_high"] = clip_interval(c, lo, hi)
        out[f"{c}_min"] = agg[(c, "min")] * k
        out[f"{c}_max"] = agg[(c, "max")] * k
    return pd.DataFrame(out, index=agg.index)


def metric_units(ok: pd.DataFrame, metrics: list[str], by: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """The values the statistics of `metrics` use, and their `by` labels: samples for per-sample
    metrics; for run-level ones the mean per run (one unit per run). Returns (values, by) with
    NaN where a unit has no value for a metric."""
    sample_m = [m for m in metrics if m not in RUN_LEVEL_METRICS]
    run_m = [m for m in metrics if m in RUN_LEVEL_METRICS]
    parts, bys = [], []
    if sample_m:
        parts.append(ok[sample_m].reindex(columns=metrics))
        bys.append(by)
    if run_m:
        rk = run_keys(ok)
        per_run = ok[run_m].groupby([by, rk], sort=False).mean()
        parts.append(per_run.reset_index(drop=True).reindex(columns=metrics))
        bys.append(pd.Series(per_run.index.get_level_values(0)))
    values = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    labels = pd.concat([b.reset_index(drop=True) for b in bys], ignore_index=True)
    return values, labels


def _joined(values) -> str:
    return ",".join(str(v) for v in sorted(values, key=natural_key))


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: group keys + effective configuration (see config_keys).

    Columns, in order:
      hardware, model, model_sha256, engine, hardware_group (label of the group);
      each parameter varying among all samples, failed ones included (its value; when a
        configuration merged several requested values, e.g. n_gpu_layers 40 and 999 both
        effective 19, a comma-joined string "40,999", so the column becomes object dtype);
      requested_n_gpu_layers (comma-joined distinct requested offloads, or None);
      merged_params (comma-joined names of parameters that took several values, "" when none);
      effective_id; n_runs (distinct run_id, failed runs included); n_samples (ok samples);
      n_failed (samples not ok);
      for each metric of table.METRICS with data among ok samples: <m>_n, _mean, _median, _std,
        _cv, _ci95_low, _ci95_high, _min, _max (run-level metrics: one unit per run);
      decode_tps_weighted = sum(n_gen_tokens - 1) / sum(decode_ms / 1000) over ok samples with
        both known and decode_ms > 0 (tok/s; NaN when none);
      noisy (bool: decode_tps or ttft_ms CV > 5%, or n_samples < 3) and noise_reason ("" if not).
    Sorted by hardware_group, then the varying parameters in natural order.
    """
    df = df.reset_index(drop=True)
    gk = list(table.GROUP_KEYS)
    ok = ok_mask(df)
    # Over all samples: a configuration that only failed (n_ctx 8192: out of memory) stays its own row.
    varying = varying_params(df, include_failed=True)
    work = df[gk].copy()
    work["_cfg"] = config_keys(df, varying)
    code = work.groupby(gk + ["_cfg"], dropna=False, sort=False).ngroup()
    g = df.groupby(code, sort=False)

    first = g[gk + ["effective_id"]].first()
    out = first[gk].copy()
    out["hardware_group"] = [group_label(*t) for t in first[gk].itertuples(index=False)]
    merged_names = [[] for _ in range(len(out))]
    for p in dict.fromkeys(varying + ["n_gpu_layers"]):
        nun = g[p].nunique(dropna=True)
        multi = nun.to_numpy() > 1
        vals = g[p].first()
        if multi.any():
            vals = vals.astype(object)
            rows = code.isin(nun.index[multi])
            sets = df.loc[rows, [p]].assign(_c=code[rows]).dropna().drop_duplicates()
            joined = sets.groupby("_c")[p].agg(lambda s: _joined(s.tolist()))
            vals.loc[joined.index] = joined
        if p == "n_gpu_layers":
            out["requested_n_gpu_layers"] = [None if pd.isna(v) else str(v) for v in vals.astype(object)]
        if p in varying:
            out[p] = vals
            for i in np.flatnonzero(multi):
                merged_names[i].append(p)
    out["merged_params"] = [",".join(x) for x in merged_names]
    out["effective_id"] = first["effective_id"]
    out["n_runs"] = g["run_id"].nunique(dropna=True).astype("int64")
    okc = ok.groupby(code, sort=False).sum().astype("int64")
    out["n_samples"] = okc
    out["n_failed"] = g.size().astype("int64") - okc

    okdf, okcode = df.loc[ok], code[ok]
    metrics = [m for m in table.METRICS if m in df.columns and okdf[m].notna().any()]
    if metrics:
        values, labels = metric_units(okdf, metrics, okcode)
        out = out.join(summary_frame(values, labels))
        for m in metrics:  # configurations without any ok sample: n is 0, not missing
            out[f"{m}_n"] = out[f"{m}_n"].fillna(0).astype("int64")

    # Token-weighted decode rate: each generated token counts once, not each repetition.
    d = df.loc[ok, ["decode_ms", "n_gen_tokens"]]
    use = d["decode_ms"].notna() & d["n_gen_tokens"].notna() & (d["decode_ms"] > 0)
    sums = pd.DataFrame({"tok": (d["n_gen_tokens"] - 1).where(use), "s": (d["decode_ms"] / 1e3).where(use)}
                        ).groupby(okcode).sum(min_count=1)
    out["decode_tps_weighted"] = (sums["tok"] / sums["s"]).where(sums["s"] > 0)

    cvs = {m: out[f"{m}_cv"].abs().to_numpy(dtype=float, na_value=np.nan)
           for m in NOISE_METRICS if f"{m}_cv" in out.columns}
    reasons = []
    for i, n in enumerate(out["n_samples"].to_numpy()):
        why = [f"{m} CV {cv[i]:.1%} > {NOISE_CV:.0%}" for m, cv in cvs.items() if cv[i] > NOISE_CV]
        if n < MIN_SAMPLES:
            why.append(f"n={n} < {MIN_SAMPLES}")
        reasons.append("; ".join(why))
    out["noisy"] = [bool(r) for r in reasons]
    out["noise_reason"] = reasons

    head = gk + ["hardware_group"] + varying + ["requested_n_gpu_layers", "merged_params", "effective_id"]
    out = out[head + [c for c in out.columns if c not in head]]
    return _sorted(out, ["hardware_group"] + varying).reset_index(drop=True)


def _sorted(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Stable sort by `cols` in natural order (numeric strings numerically, merged lists by their
    first value)."""
    if frame.empty:
        return frame
    keys = {}
    for i, c in enumerate(cols):
        vals = frame[c].astype(object).map(lambda v: v.split(",")[0] if isinstance(v, str) and "," in v else v)
        k = [natural_key(v) for v in vals]
        keys[f"_k{i}a"] = [x[0] for x in k]
        keys[f"_k{i}b"] = [x[1] for x in k]
        keys[f"_k{i}c"] = [x[2] for x in k]
    kf = pd.DataFrame(keys, index=frame.index)
    order = kf.sort_values(list(kf.columns), kind="stable").index
    return frame.loc[order]
