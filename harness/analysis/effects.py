"""Effects of each varying parameter on each metric, with the multiple-comparison correction that
keeps noise from being reported as findings.

For a parameter p and a metric m, inside one group (hardware, model, model hash, engine; groups
are never pooled): the marginal mean of m at each level of p (over all ok samples at that level),
then a test between each pair of adjacent levels (sorted; numbers numerically). Welch's t-test,
or a permutation test of the difference of means (fixed seed; exact when the splits are few) when
a side has fewer than 3 values or no variance. Holm-Bonferroni over every comparison of the call.
A comparison is significant when p_holm < alpha AND the relative difference is at least
`min_effect` (a 0.3% difference is not a finding, however many samples show it).

Two things are never attributed to the parameter:
- a difference between two levels that are the same effective configuration (n_gpu_layers 40 and
  999 on an 18-layer model): noted "same effective configuration", never significant;
- a difference that coincides with a model reload (one level's samples include fresh loads and the
  other's do not, or p changes what is loaded): flagged load_effect, noted "coincides with a
  model reload". The test result stands; the renderer must not say the parameter caused it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from . import table
from .stats import (RUN_LEVEL_METRICS, config_keys, group_label, natural_key, ok_mask, run_keys,
                    varying_params)

DEFAULT_METRICS = ("decode_tps", "ttft_ms", "prefill_tps", "energy_per_token_j", "vram_used_mib")
#: Parameters whose change means a different loaded model (llama-bench's "needs a reload").
LOAD_PARAMS = ("n_gpu_layers", "n_gpu_layers_effective", "n_ctx", "n_ctx_effective", "n_batch",
               "n_ubatch", "flash_attn", "type_k", "type_v", "n_threads", "model")
PERMUTATION_RESAMPLES = 9999
SEED = 20240601
MIN_N_WELCH = 3
# Effective parameters first: when requested and effective split the samples identically, the
# effective one is tested and the requested one is listed as its alias.
_PREFERRED_FIRST = ("n_gpu_layers_effective", "n_ctx_effective")


def effects(df: pd.DataFrame, metrics=DEFAULT_METRICS, alpha: float = 0.05,
            min_effect: float = 0.01, seed: int = SEED) -> list[dict]:
    """Adjacent-level comparisons of every varying parameter on every metric with data.

    Returns a list of dicts, one per comparison, in (group, param, metric, level) order:
      group (str label), group_keys (dict hardware/model/model_sha256/engine), param,
      aliases (list of other params that split the samples identically; not tested again),
      metric, unit ("sample", or "run" for run-level metrics: one value per run),
      level_a, level_b (level_a sorts before level_b), n_a, n_b, mean_a, mean_b,
      ci_a, ci_b ((low, high) 95% t-interval of the mean, (None, None) for n < 2),
      diff = mean_b - mean_a, rel_diff = diff / mean_a (NaN when mean_a is 0),
      test ("welch" | "permutation"), p_value, p_holm (Holm over all comparisons of this call),
      significant (p_holm < alpha and |rel_diff| >= min_effect and not same_effective),
      same_effective (the two levels are the same effective configurations),
      load_effect (bool), note ("; "-joined plain-words reasons, always ending with
      "significant" or "not significant").
    """
    df = df.reset_index(drop=True)
    ok = ok_mask(df)
    cfg = config_keys(df)
    d = df.loc[ok].copy()
    d["_cfg"] = cfg[ok]
    d["_loaded"] = (d["load_reused"] == False).fillna(False).astype(bool)  # noqa: E712 (nullable)
    d["_lknown"] = d["load_reused"].notna()
    metrics = [m for m in dict.fromkeys(metrics) if m in d.columns and d[m].notna().any()]
    gk = list(table.GROUP_KEYS)
    comps: list[dict] = []
    if d.empty or not metrics:
        return comps
    for keys, sub in d.groupby(gk, dropna=False, sort=True):
        gkeys = {k: (None if pd.isna(v) else v) for k, v in zip(gk, keys)}
        label = group_label(*keys)
        params = _params_to_test(sub)
        if not params:
            continue
        runs = _per_run(sub, [m for m in metrics if m in RUN_LEVEL_METRICS], [p for p, _ in params])
        for p, aliases in params:
            for m in metrics:
                f = runs if m in RUN_LEVEL_METRICS else sub
                load_param = any(x in LOAD_PARAMS for x in [p, *aliases])
                for c in _compare_levels(f, p, m, load_param, seed):
                    comps.append({"group": label, "group_keys": gkeys, "param": p, "aliases": aliases,
                                  "metric": m, "unit": "run" if m in RUN_LEVEL_METRICS else "sample", **c})
    _finish(comps, alpha, min_effect)
    return comps


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a comparison)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    fin = np.flatnonzero(np.isfinite(p))
    m = fin.size
    if m:
        order = fin[np.argsort(p[fin], kind="stable")]
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


def effect_summary(comparisons: list[dict]) -> list[dict]:
    """One dict per (group, param, metric), in first-seen order:
      group, param, metric, n_comparisons, n_significant, any_significant,
      largest_rel_diff (signed rel_diff of largest magnitude among comparisons of different
        effective configurations; NaN when none), largest_between ((level_a, level_b) of it),
      load_effect (any comparison flagged), same_effective_only (every comparison was between
        equal effective configurations),
      verdict: "no measurable effect" | "measurable effect" | "effect coincides with a model
        reload" (every significant comparison is load-flagged) | "same effective configuration".
    """
    out: dict[tuple, dict] = {}
    for c in comparisons:
        key = (c["group"], c["param"], c["metric"])
        s = out.setdefault(key, {"group": c["group"], "param": c["param"], "metric": c["metric"],
                                 "n_comparisons": 0, "n_significant": 0, "any_significant": False,
                                 "largest_rel_diff": math.nan, "largest_between": None,
                                 "load_effect": False, "same_effective_only": True,
                                 "_sig_clean": False})
        s["n_comparisons"] += 1
        s["load_effect"] |= bool(c["load_effect"])
        if c["significant"]:
            s["n_significant"] += 1
            s["any_significant"] = True
            s["_sig_clean"] |= not c["load_effect"]
        if not c["same_effective"]:
            s["same_effective_only"] = False
            r = c["rel_diff"]
            if math.isfinite(r) and not (abs(r) <= abs(s["largest_rel_diff"])):
                s["largest_rel_diff"], s["largest_between"] = r, (c["level_a"], c["level_b"])
    result = []
    for s in out.values():
        clean = s.pop("_sig_clean")
        if s["same_effective_only"]:
            s["verdict"] = "same effective configuration"
        elif not s["any_significant"]:
            s["verdict"] = "no measurable effect"
        else:
            s["verdict"] = "measurable effect" if clean else "effect coincides with a model reload"
        result.append(s)
    return result


# --- internals ----------------------------------------------------------------------------------

def _params_to_test(sub: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """Varying params of one group, each with the params that split its samples identically."""
    varying = varying_params(sub)
    varying = [p for p in _PREFERRED_FIRST if p in varying] + [p for p in varying if p not in _PREFERRED_FIRST]
    kept: list[tuple[str, list[str], np.ndarray, int]] = []
    for p in varying:
        codes, uniq = pd.factorize(sub[p].astype(object), use_na_sentinel=True)
        for q, aliases, qcodes, qn in kept:
            if qn == len(uniq) and np.array_equal(codes < 0, qcodes < 0):
                both = codes >= 0
                pairs = np.unique(codes[both].astype(np.int64) * (qn + 1) + qcodes[both])
                if pairs.size == qn:
                    aliases.append(p)
                    break
        else:
            kept.append((p, [], codes, len(uniq)))
    return [(p, aliases) for p, aliases, _, _ in kept]


def _per_run(sub: pd.DataFrame, run_metrics: list[str], params: list[str]) -> pd.DataFrame | None:
    """One row per run for run-level metrics: params and config key of the run, metric means, and
    whether the run loaded its model."""
    if not run_metrics:
        return None
    rk = run_keys(sub)
    g = sub.groupby(rk, sort=False)
    out = g[params + ["_cfg"]].first()
    out[run_metrics] = g[run_metrics].mean()
    out["_loaded"] = g["_loaded"].any()
    out["_lknown"] = g["_lknown"].any()
    return out.reset_index(drop=True)


def _level_value(v):
    return v.item() if hasattr(v, "item") else v


def _ci(n: int, mean: float, std: float) -> tuple:
    if n < 2 or not math.isfinite(std):
        return (None, None)
    half = float(sps.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return (mean - half, mean + half)


def _compare_levels(f: pd.DataFrame, p: str, m: str, load_param: bool, seed: int) -> list[dict]:
    vals = f[m].to_numpy(dtype=float, na_value=np.nan)
    vals = np.where(np.isfinite(vals), vals, np.nan)
    mask = ~np.isnan(vals) & f[p].notna().to_numpy()
    if mask.sum() < 2:
        return []
    sel = f.loc[mask, [p, "_cfg", "_loaded", "_lknown"]]
    v = vals[mask]
    idx = sel.groupby(sel[p].astype(object), sort=False).indices
    if len(idx) < 2:
        return []
    cfgs, loaded, known = sel["_cfg"].to_numpy(), sel["_loaded"].to_numpy(), sel["_lknown"].to_numpy()
    levels = []
    for lv in sorted(idx, key=natural_key):
        i = idx[lv]
        x = v[i]
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if x.size >= 2 else math.nan
        levels.append({"level": _level_value(lv), "x": x, "n": int(x.size), "mean": mean, "std": std,
                       "ci": _ci(x.size, mean, std), "cfgs": frozenset(cfgs[i]),
                       "loaded": bool(loaded[i].any()), "known": bool(known[i].any())})
    out = []
    for a, b in zip(levels, levels[1:]):
        same_eff = a["cfgs"] == b["cfgs"]
        reload = (a["known"] and b["known"] and a["loaded"] != b["loaded"]) or \
                 (load_param and not same_eff)
        test, p_value, why = _test(a["x"], b["x"], seed)
        diff = b["mean"] - a["mean"]
        out.append({"level_a": a["level"], "level_b": b["level"], "n_a": a["n"], "n_b": b["n"],
                    "mean_a": a["mean"], "mean_b": b["mean"], "ci_a": a["ci"], "ci_b": b["ci"],
                    "diff": diff, "rel_diff": diff / a["mean"] if a["mean"] else math.nan,
                    "test": test, "p_value": p_value, "p_holm": math.nan, "significant": False,
                    "same_effective": same_eff, "load_effect": bool(reload), "_why": why})
    return out


def _mean_diff(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _test(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[str, float, str]:
    """(test name, two-sided p, reason for the permutation test or "")."""
    small = a.size < MIN_N_WELCH or b.size < MIN_N_WELCH
    flat = (a.size >= 2 and np.ptp(a) == 0) or (b.size >= 2 and np.ptp(b) == 0)
    if not small and not flat:
        return "welch", float(sps.ttest_ind(a, b, equal_var=False).pvalue), ""
    why = f"n < {MIN_N_WELCH}" if small else "zero variance"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "permutation", constant_permutation_p(a.size, b.size, bool(a[0] == b[0])), why
    n = a.size + b.size
    res = sps.permutation_test((a, b), _mean_diff, vectorized=True, n_resamples=PERMUTATION_RESAMPLES,
                               permutation_type="independent", alternative="two-sided",
                               rng=np.random.default_rng(seed), batch=max(1, 2_000_000 // n))
    return "permutation", float(min(1.0, res.pvalue)), why


def constant_permutation_p(n_a: int, n_b: int, equal: bool) -> float:
    """Exact two-sided permutation p-value of the difference of means when each side is constant:
    1 when the two constants are equal; else only the observed split (and its mirror image when
    n_a == n_b) is as extreme, out of C(n_a + n_b, n_a) splits."""
    if equal:
        return 1.0
    extreme = 2 if n_a == n_b else 1
    return min(1.0, extreme / math.comb(n_a + n_b, n_a))


def _finish(comps: list[dict], alpha: float, min_effect: float) -> None:
    adj = holm([c["p_value"] for c in comps])
    for c, ph in zip(comps, adj):
        c["p_holm"] = float(ph)
        notes = []
        if c["same_effective"]:
            notes.append("same effective configuration")
        if c["load_effect"]:
            notes.append("coincides with a model reload")
        if c["test"] == "permutation":
            notes.append(f"permutation test ({c['_why']})")
        below = math.isfinite(c["rel_diff"]) and abs(c["rel_diff"]) < min_effect
        passes = bool(ph < alpha) and not below
        if ph < alpha and below and not c["same_effective"]:
            notes.append(f"below the minimum effect size ({min_effect:.0%})")
        c["significant"] = passes and not c["same_effective"] and math.isfinite(c["rel_diff"])
        notes.append("significant" if c["significant"] else "not significant")
        c["note"] = "; ".join(notes)
        del c["_why"]
