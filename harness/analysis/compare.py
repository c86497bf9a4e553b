"""A against B: the same configurations measured twice (before/after a change, machine X and Y),
and pytest-benchmark-style checks that turn a significant slowdown into a failure.

Configurations are matched on the model name and the parameters that vary across A and B together
(requested values; effective_id and the *_effective columns are not matched on, since a change of
engine or machine may change them). Where a matched configuration's hardware, engine or model hash
differ between A and B the row says so in `note`. Inside one side, samples of different groups are
never pooled: each group is paired with the same group on the other side when there is one, else
with every remaining group of that configuration there.

Saved pytest-benchmark runs are matched by benchmark name instead: when every sample of A and B
comes from pytest-benchmark JSON, a configuration is one benchmark (the `job` column), whatever
its parameters, so a benchmark whose overrides changed is still compared with itself.

The ratio B/A of the means has a 95% CI by Fieller's method (default: exact for the ratio of two
independent normal means, vectorised, works from n = 2), or by bootstrap (2000 resamples of each
side, fixed seed; percentile interval). A change is significant when Welch's p < alpha AND that
95% CI excludes 1 AND |ratio - 1| >= min_effect (1%): "not significant" is said out loud in
`note`. (With Fieller's interval and alpha = 0.05 the first two agree, since the interval excludes
1 exactly when Welch's t passes its 97.5% quantile; they differ for an unbounded interval, a
bootstrap interval, or another alpha, and then both must hold.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from .. import registry
from ..report.format import interval, param
from . import table
from .best import plain
from .effects import constant_permutation_p, holm
from .significance import welch_p_array
from .stats import (RUN_LEVEL_METRICS, group_label, metric_units, natural_key, non_negative, ok_mask,
                    summary_frame, varying_params)

DEFAULT_METRICS = registry.COMPARE_METRICS
MIN_EFFECT = 0.01
BOOT_RESAMPLES = 2000
SEED = 20240601
_NOT_MATCHED = ("effective_id", "n_gpu_layers_effective", "n_ctx_effective")
#: The column that names a pytest-benchmark benchmark in the tidy table; compare() matches saved
#: pytest-benchmark runs on it.
BENCHMARK_KEY = "job"


def better_when(metric: str) -> str | None:
    """"higher", "lower", or None when the metric has no better direction (e.g. gpu_util_pct), as
    the metric registry says."""
    return registry.better(metric)


@dataclass(frozen=True)
class CompareResult:
    """What compare() returns. Iterating, len() and [i] go over `rows`, so a CompareResult can be
    passed wherever a list of comparison rows is expected (regressions(), Check.fails).

    rows: one dict per (matched configuration, metric with data on both sides):
      config (dict param -> value of the matched params), label ("n_ctx=512, temperature=0.2", or
      "all samples" when no parameter varies), model, group_a, group_b (group labels),
      group_keys_a, group_keys_b (dicts hardware/model/model_sha256/engine), metric, unit
      ("sample" | "run"), n_a, n_b, n_failed_a, n_failed_b, mean_a, mean_b, ratio (mean_b/mean_a;
      NaN when mean_a <= 0), ratio_ci95_low, ratio_ci95_high (NaN when unbounded or n < 2),
      ci_method ("fieller" | "bootstrap"), p_value (Welch; exact permutation when both sides are
      constant; NaN when a side has n < 2), p_holm (Holm over all rows of the call), significant
      (p < alpha, or p_holm < alpha with correct=True, AND the 95% CI excludes 1 AND
      |ratio - 1| >= min_effect),
      direction ("better" | "worse" | "same"; "higher" | "lower" for metrics without a better
      direction, e.g. gpu_util_pct), min_effect, note ("; "-joined plain words, ending
      "significant" or "not significant").
    unmatched_a, unmatched_b: configurations found on one side only, as dicts: config, label,
      model, group, n_samples (ok), n_failed.
    params: the parameters matched on (besides model).
    n_matched: configuration pairs (A group, B group) found on both sides, whether or not a metric
      had data on both (0: A and B have no configuration in common, nothing was compared).
    """

    rows: list[dict]
    unmatched_a: list[dict] = field(default_factory=list)
    unmatched_b: list[dict] = field(default_factory=list)
    params: tuple[str, ...] = ()
    n_matched: int = 0

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def compare(df_a: pd.DataFrame, df_b: pd.DataFrame, metrics=DEFAULT_METRICS, alpha: float = 0.05,
            min_effect: float = MIN_EFFECT, ci: str = "fieller", seed: int = SEED,
            correct: bool = False) -> CompareResult:
    """Compare every configuration found in both tidy tables A and B on each metric (B relative to
    A). See CompareResult for the returned structure. ci: "fieller" or "bootstrap".

    Every row carries p_holm (Holm-Bonferroni over all rows of the call). By default significance
    uses the raw p (pyperf's and pytest-benchmark's habit: one comparison per benchmark); with
    correct=True it uses p_holm, which keeps a table of many configurations x metrics from
    yielding ~5% chance "regressions"."""
    if ci not in ("fieller", "bootstrap"):
        raise ValueError(f"compare: ci must be 'fieller' or 'bootstrap', got {ci!r}")
    gk = list(table.GROUP_KEYS)
    both = pd.concat([df_a.assign(_side="a"), df_b.assign(_side="b")], ignore_index=True)
    if _by_name(both):  # saved pytest-benchmark runs: one configuration per benchmark name
        params, keycols = [BENCHMARK_KEY], [BENCHMARK_KEY]
    else:
        params = [p for p in varying_params(both, include_failed=True) if p not in _NOT_MATCHED]
        keycols = ["model"] + params
    both["_code"] = both.groupby(keycols, dropna=False, sort=False).ngroup()
    both["_unit"] = both.groupby(["_side", "_code"] + gk, dropna=False, sort=False).ngroup()
    ok = ok_mask(both)

    units = both.groupby("_unit", sort=True)
    info = units[["_side", "_code"] + gk + params].first()
    for c in gk + params:  # first() skips missing values; a unit's keys are constant anyway
        info[c] = info[c].astype(object)
    info["n_samples"] = ok.groupby(both["_unit"]).sum().reindex(info.index, fill_value=0).astype(int)
    info["n_failed"] = units.size() - info["n_samples"]
    if "weights_huge_share" in both:  # where the weights sat in memory: a factor of CPU decode speed
        info["huge_share"] = pd.to_numeric(both["weights_huge_share"], errors="coerce").groupby(both["_unit"]).mean()
    else:
        info["huge_share"] = np.nan
    info["label"] = [_label(params, r) for r in info[params].itertuples(index=False)]
    info["group"] = [group_label(*t) for t in info[gk].itertuples(index=False)]

    pairs = _pairs(info, gk)
    meta = [{"config": {p: plain(r[p]) for p in params}, "label": r["label"], "model": plain(r["model"]),
             "group": r["group"], "group_keys": {k: plain(r[k]) for k in gk}, "side": r["_side"],
             "n_samples": int(r["n_samples"]), "n_failed": int(r["n_failed"]),
             "huge_share": None if pd.isna(r["huge_share"]) else float(r["huge_share"])}
            for r in info.to_dict("records")]
    matched = set(pairs["ua"]) | set(pairs["ub"])
    unmatched = {s: [{k: m[k] for k in ("config", "label", "model", "group", "n_samples", "n_failed")}
                     for u, m in enumerate(meta) if m["side"] == s and u not in matched] for s in ("a", "b")}

    okdf = both.loc[ok]
    metrics = [m for m in dict.fromkeys(metrics) if m in okdf.columns and okdf[m].notna().any()]
    rows: list[dict] = []
    if metrics and len(pairs):
        values, labels = metric_units(okdf, metrics, okdf["_unit"])
        values = values.replace([np.inf, -np.inf], np.nan)
        agg = summary_frame(values, labels.to_numpy())  # safe near the float limit
        raw = _raw_by_unit(values, labels) if ci == "bootstrap" else None
        ua, ub = pairs["ua"].to_numpy(), pairs["ub"].to_numpy()
        for m in metrics:
            st = {s: agg[f"{m}_{t}"].reindex(info.index) for s, t in (("count", "n"), ("mean", "mean"), ("std", "std"))}
            na, nb = st["count"].fillna(0).to_numpy()[ua], st["count"].fillna(0).to_numpy()[ub]
            res = _ratio_stats(st["mean"].to_numpy()[ua], st["std"].to_numpy()[ua], na,
                               st["mean"].to_numpy()[ub], st["std"].to_numpy()[ub], nb)
            if ci == "bootstrap":
                res["lo"], res["hi"] = _bootstrap(raw, m, ua, ub, seed)
            if non_negative(m):  # a ratio of quantities that cannot be negative cannot be either
                res["lo"] = np.maximum(res["lo"], 0.0)
            for i in range(len(pairs)):
                if na[i] == 0 or nb[i] == 0:
                    continue
                rows.append(_row(meta[ua[i]], meta[ub[i]], m, {k: v[i] for k, v in res.items()},
                                 ci, alpha, min_effect))
    adj = holm([r["p_value"] for r in rows])
    for r, ph in zip(rows, adj):
        r["p_holm"] = float(ph)
        if correct and r["significant"] and not ph < alpha:
            r["significant"], r["direction"] = False, "same"
            kept = r["note"].split("; ")[:-1]  # drop the trailing "significant"
            r["note"] = "; ".join(kept + ["not significant after Holm correction"])
    order = {m: i for i, m in enumerate(metrics)}
    rows.sort(key=lambda r: (r["group_a"], r["group_b"], r["model"] or "",
                             [natural_key(r["config"][p]) for p in params], order[r["metric"]]))
    return CompareResult(rows=rows, unmatched_a=unmatched["a"], unmatched_b=unmatched["b"],
                         params=tuple(params), n_matched=len(pairs))


# --- checks -------------------------------------------------------------------------------------

_CHECK_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([+-])\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")
_FORM = "expected METRIC:+N% or METRIC:-N%, e.g. decode_tps:-5% or ttft_ms:+10%"
_CHECK_METRICS = tuple(table.METRICS) + ("decode_tps_weighted", "e2e_tps")
_EPS = 1e-9


@dataclass(frozen=True)
class Check:
    """A regression check: fails a comparison row of its metric that is significant (Welch's p <
    alpha and the 95% CI of B/A excludes 1) and whose change B/A - 1 reaches `limit` in the
    direction `sign` ("-": B lower, "+": B higher). Both are needed: a large change that noise can
    explain passes, and so does a significant change smaller than the limit."""

    metric: str
    sign: str  # "+" | "-"
    limit: float  # fraction, >= 0 (0.05 for 5%)
    spec: str

    def fails(self, row: dict) -> str | None:
        """A one-line failure message, or None (other metric, not significant, within the limit)."""
        if row.get("metric") != self.metric or not row.get("significant"):
            return None
        ratio = row.get("ratio")
        if ratio is None or not math.isfinite(ratio):
            return None
        change = ratio - 1.0
        # "At least as large as the threshold": a change of exactly -5% fails decode_tps:-5%.
        # The tolerance keeps 0.95 / 1.0 - 1 (not exactly -0.05 in floating point) on that side.
        if not ((self.sign == "-" and change <= -self.limit + _EPS) or
                (self.sign == "+" and change >= self.limit - _EPS)):
            return None
        lo, hi = row.get("ratio_ci95_low"), row.get("ratio_ci95_high")
        ci_txt = f"95% CI {interval(lo, hi, '.3f')}"
        return (f"{self.metric} {abs(change):.1%} {'lower' if change < 0 else 'higher'} in B than A "
                f"({row['mean_b']:.4g} vs {row['mean_a']:.4g}, ratio {ratio:.3f}, {ci_txt}, "
                f"p={row['p_value']:.2g}) for {row.get('label')} [{row.get('group_b')}]: "
                f"check {self.spec} allows {self.sign}{self.limit:.0%}")

    def __str__(self) -> str:
        return self.spec


def parse_check(spec: str) -> Check:
    """Parse "decode_tps:-5%" (fail when B's decode_tps is significantly more than 5% lower) or
    "ttft_ms:+10%" (fail when B's TTFT is significantly more than 10% higher).

    Raises ValueError with one line naming the spec and the accepted form when the spec is
    malformed, names an unknown metric, or points the check at an improvement (decode_tps:+5%).
    """
    m = _CHECK_RE.match(spec) if isinstance(spec, str) else None
    if not m:
        raise ValueError(f"bad check {spec!r}: {_FORM}")
    metric, sign, num = m.group(1), m.group(2), float(m.group(3))
    if metric not in _CHECK_METRICS:
        raise ValueError(f"bad check {spec!r}: unknown metric {metric!r} "
                         f"(known: {', '.join(_CHECK_METRICS)}); {_FORM}")
    if sign == "-" and num >= 100:
        raise ValueError(f"bad check {spec!r}: a drop of {num:g}% or more cannot happen; {_FORM}")
    good = better_when(metric)
    if (good == "higher" and sign == "+") or (good == "lower" and sign == "-"):
        bad = "-" if sign == "+" else "+"
        raise ValueError(f"bad check {spec!r}: {good} {metric} is better, so this would fail on an "
                         f"improvement; use {metric}:{bad}{num:g}%")
    return Check(metric=metric, sign=sign, limit=num / 100.0, spec=spec.strip())


def regressions(comparisons, checks) -> list[str]:
    """Every failure message of `checks` (Check objects or spec strings) over `comparisons` (a
    CompareResult or a list of its rows), in row order."""
    checks = [c if isinstance(c, Check) else parse_check(c) for c in checks]
    return [msg for row in comparisons for c in checks if (msg := c.fails(row)) is not None]


# --- internals ----------------------------------------------------------------------------------

def _label(params: list[str], values) -> str:
    if params == [BENCHMARK_KEY]:  # matched by benchmark name: the name is the label
        v = plain(next(iter(values), None))
        return str(v) if v is not None else "unnamed benchmark"
    parts = [f"{p}={param(plain(v))}" for p, v in zip(params, values) if plain(v) is not None]
    return ", ".join(parts) or "all samples"


def _by_name(both: pd.DataFrame) -> bool:
    """True when every sample of A and B comes from saved pytest-benchmark runs (matched by name)."""
    fmt = both.get("source_format")
    return (fmt is not None and len(both) > 0 and bool(fmt.eq("pytest-benchmark").fillna(False).all())
            and BENCHMARK_KEY in both.columns)


def _pairs(info: pd.DataFrame, gk: list[str]) -> pd.DataFrame:
    """(ua, ub) unit pairs of each configuration: same group where there is one, else every
    remaining A group of the configuration with every remaining B group."""
    a = info.loc[info["_side"] == "a", ["_code"] + gk].reset_index(names="ua")
    b = info.loc[info["_side"] == "b", ["_code"] + gk].reset_index(names="ub")
    pr = a.merge(b, on="_code", suffixes=("_a", "_b"))
    if pr.empty:
        return pd.DataFrame({"ua": pd.Series(dtype=int), "ub": pd.Series(dtype=int)})
    same = np.ones(len(pr), dtype=bool)
    for k in gk:
        x, y = pr[f"{k}_a"].astype(object), pr[f"{k}_b"].astype(object)
        same &= ((x == y) | (x.isna() & y.isna())).fillna(False).to_numpy(dtype=bool)
    pr["_same"] = same
    has_a = pr.groupby("ua")["_same"].transform("any").to_numpy(dtype=bool)
    has_b = pr.groupby("ub")["_same"].transform("any").to_numpy(dtype=bool)
    keep = same | (~has_a & ~has_b)
    return pr.loc[keep, ["ua", "ub"]].reset_index(drop=True)


def _ratio_stats(ma, sa, na, mb, sb, nb) -> dict:
    """Vectorised ratio mb/ma, its Fieller 95% CI (Welch df) and Welch's p."""
    ma, sa, na, mb, sb, nb = (np.asarray(x, dtype=float) for x in (ma, sa, na, mb, sb, nb))
    means = {"ma": ma, "mb": mb}
    # The ratio, its CI and the t statistic do not change when both sides are scaled alike; scaled
    # to at most 1, the squares below cannot overflow on extreme (foreign) data. fmax skips NaN.
    scale = np.fmax(np.fmax(np.abs(ma), np.abs(mb)), np.fmax(sa, sb))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    ma, mb, sa, sb = ma / scale, mb / scale, sa / scale, sb / scale
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = sa ** 2 / na, sb ** 2 / nb
        with np.errstate(over="ignore", under="ignore"):  # beyond float range: no ratio (NaN below)
            ratio = np.where(ma > 0, mb / ma, np.nan)
        ratio = np.where(np.isfinite(ratio), ratio, np.nan)
        df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
        df = np.where((va + vb) > 0, df, np.inf)
        q = special.stdtrit(np.where(np.isfinite(df), df, 1e9), 0.975) ** 2
        den = ma ** 2 - q * va
        disc = q * (ma ** 2 * vb + mb ** 2 * va) - q ** 2 * va * vb
        root = np.sqrt(np.maximum(disc, 0.0))
        bounded = (den > 0) & (na >= 2) & (nb >= 2) & (ma > 0)
        lo = np.where(bounded, (ma * mb - root) / den, np.nan)
        hi = np.where(bounded, (ma * mb + root) / den, np.nan)
        p = welch_p_array(na, ma, sa ** 2, nb, mb, sb ** 2)
    p = np.asarray(p, dtype=float)
    small = (na < 2) | (nb < 2)
    flat = ~small & (sa == 0) & (sb == 0)
    p = np.where(small, np.nan, p)
    for i in np.flatnonzero(flat):
        p[i] = constant_permutation_p(int(na[i]), int(nb[i]), bool(ma[i] == mb[i]))
    return {**means, "na": na, "nb": nb, "ratio": ratio, "lo": lo, "hi": hi, "p": p,
            "flat": flat, "small": small}


def _raw_by_unit(values: pd.DataFrame, labels: pd.Series) -> dict:
    return {"values": values, "idx": labels.groupby(labels.to_numpy()).indices}


def _bootstrap(raw: dict, m: str, ua: np.ndarray, ub: np.ndarray, seed: int):
    """Percentile 95% CI of mean_b/mean_a from BOOT_RESAMPLES resamples of each side."""
    col = raw["values"][m].to_numpy(dtype=float)
    lo, hi = np.full(len(ua), np.nan), np.full(len(ua), np.nan)
    for i, (a, b) in enumerate(zip(ua, ub)):
        xa, xb = col[raw["idx"].get(a, [])], col[raw["idx"].get(b, [])]
        xa, xb = xa[np.isfinite(xa)], xb[np.isfinite(xb)]
        if xa.size < 2 or xb.size < 2:
            continue
        k = max(float(np.abs(xa).max()), float(np.abs(xb).max()))
        if k > 0:  # the ratio does not change; sums of values near the float limit would overflow
            xa, xb = xa / k, xb / k
        rng = np.random.default_rng(seed)
        ra = xa[rng.integers(0, xa.size, (BOOT_RESAMPLES, xa.size))].mean(axis=1)
        rb = xb[rng.integers(0, xb.size, (BOOT_RESAMPLES, xb.size))].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            r = rb / ra  # 0 / 0 and x / 0 resamples are dropped: not finite
        r = r[np.isfinite(r)]
        if r.size:
            lo[i], hi[i] = np.percentile(r, [2.5, 97.5])
    return lo, hi


def _row(A: dict, B: dict, m: str, r: dict, ci: str, alpha: float, min_effect: float) -> dict:
    notes = [f"{k} differs: A {A['group_keys'][k]!r}, B {B['group_keys'][k]!r}" for k in table.GROUP_KEYS
             if k != "model" and A["group_keys"][k] != B["group_keys"][k]]
    ratio, p = float(r["ratio"]), float(r["p"])
    if r["small"]:
        notes.append("n < 2 on a side: no test")
    elif r["flat"]:
        notes.append("zero variance on both sides: exact permutation p")
    if not math.isfinite(ratio):
        notes.append("mean of A is not positive: no ratio")
    elif not (math.isfinite(r["lo"]) and math.isfinite(r["hi"])) and not r["small"]:
        notes.append("ratio CI unbounded")
    big = math.isfinite(ratio) and abs(ratio - 1.0) >= min_effect
    lo, hi = float(r["lo"]), float(r["hi"])
    excludes_1 = math.isfinite(lo) and math.isfinite(hi) and (hi < 1.0 or lo > 1.0)
    significant = bool(math.isfinite(p) and p < alpha and big and excludes_1)
    if math.isfinite(p) and p < alpha and not big:
        notes.append(f"below the minimum effect size ({min_effect:.0%})")
    elif math.isfinite(p) and p < alpha and not excludes_1:
        notes.append(f"Welch p < {alpha:g} but the 95% CI of the ratio does not exclude 1")
    if A["n_failed"] or B["n_failed"]:
        notes.append(f"failed samples: A {A['n_failed']}, B {B['n_failed']} (not averaged)")
    ha, hb = A.get("huge_share"), B.get("huge_share")
    if ha is not None and hb is not None and abs(ha - hb) > table.HUGE_SHARE_SPREAD:
        notes.append(f"weights mapped differently (huge-page share A {ha:.0%}, B {hb:.0%}): a factor of CPU decode")
    notes.append("significant" if significant else "not significant")
    good = better_when(m)
    if not significant:
        direction = "same"
    elif good is None:
        direction = "higher" if ratio > 1 else "lower"
    else:
        direction = "better" if (ratio > 1) == (good == "higher") else "worse"
    return {"config": dict(A["config"]), "label": A["label"], "model": A["model"],
            "group_a": A["group"], "group_b": B["group"],
            "group_keys_a": dict(A["group_keys"]), "group_keys_b": dict(B["group_keys"]),
            "metric": m, "unit": "run" if m in RUN_LEVEL_METRICS else "sample",
            "n_a": int(r["na"]), "n_b": int(r["nb"]), "n_failed_a": A["n_failed"], "n_failed_b": B["n_failed"],
            "mean_a": float(r["ma"]), "mean_b": float(r["mb"]), "ratio": ratio,
            "ratio_ci95_low": float(r["lo"]), "ratio_ci95_high": float(r["hi"]), "ci_method": ci,
            "p_value": p, "significant": significant, "direction": direction, "min_effect": min_effect,
            "note": "; ".join(notes)}
