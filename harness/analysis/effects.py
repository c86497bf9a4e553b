"""Effects of each varying parameter on each metric, with the multiple-comparison correction that
keeps noise from being reported as findings.

For a parameter p and a metric m, inside one group (hardware, model, model hash, engine; groups
are never pooled): the marginal mean of m at each level of p (over all ok samples at that level,
with its 95% t-interval), then a test between each pair of adjacent levels (sorted; numbers
numerically), Holm-Bonferroni over every comparison of the call. A comparison is significant when
p_holm < alpha AND |rel_diff| >= `min_effect` (a 0.3% difference is not a finding, however many
samples show it).

The test between two levels:
- balanced design (the other varying parameters are mixed in the same proportions at both levels,
  as in a full Hydra sweep): Welch's t-test on the samples of the two levels, or a permutation test
  of the difference of means (fixed seed; exact when the splits are few) when a side has fewer
  than 3 values or no variance;
- unbalanced design (a partial or merged sweep, failed runs): marginal means would mix the effect
  of p with that of the other parameters (a 4% "effect" of top_p on TTFT that is really n_ctx), so
  the difference and the test are taken *within* the combinations of the other parameters present
  at both levels ("stratified": the inverse-variance weighted mean of the per-combination
  differences, t-test with the pooled within-cell variance; a paired t-test over the combinations
  when no cell has replicates). When the levels share no combination at all, the marginal test is
  kept and the note says the comparison may be confounded.

Two things are never attributed to the parameter:
- a difference between two levels that are the same effective configuration (n_gpu_layers 40 and
  999 on an 18-layer model): noted "same effective configuration", never significant;
- a difference that coincides with a model reload (one level's samples include runs that loaded
  the model and the other's do not): flagged load_effect, noted "coincides with a model reload".
  The test result stands; the renderer must not say the parameter caused it.
A load-changing parameter (n_ctx, n_gpu_layers, ...) reloads the model at every level by its
nature; the harness keeps load time out of every sample and warms up after each load, so its
differences are attributed to it, with the note "each level is a separate load".

This module fits the comparisons (levels, strata, means); the tests themselves are in
`significance`, the significance decision and the words of each note in `verdicts`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from .. import registry
from . import table
# The tests and the verdict text live in their own modules; their public names stay importable
# from here, where callers have always found them.
from .significance import (PERMUTATION_RESAMPLES, constant_permutation_p, exact_permutation_p,  # noqa: F401
                           holm, stratified_test, two_level_test, welch_p)
from .stats import EFFECTIVE_OF, config_keys, group_label, natural_key, ok_mask, run_keys, varying_params
from .verdicts import effect_summary, finish  # noqa: F401

DEFAULT_METRICS = registry.EFFECT_METRICS
RUN_LEVEL_METRICS = registry.RUN_LEVEL_METRICS
#: Parameters whose change means a different loaded model (llama-bench's "needs a reload").
LOAD_PARAMS = ("n_gpu_layers", "n_gpu_layers_effective", "n_ctx", "n_ctx_effective", "n_batch",
               "n_ubatch", "flash_attn", "type_k", "type_v", "n_threads", "model")
SEED = 20240601
# Effective parameters first: when requested and effective split the samples identically, the
# effective one is tested and the requested one is listed as its alias.
_PREFERRED_FIRST = tuple(EFFECTIVE_OF.values())
# A requested parameter and its effective value are one parameter for stratification.
_LINKED = {**EFFECTIVE_OF, **{v: k for k, v in EFFECTIVE_OF.items()}}


def effects(df: pd.DataFrame, metrics=DEFAULT_METRICS, alpha: float = 0.05,
            min_effect: float = 0.01, seed: int = SEED, drift: dict | None = None) -> list[dict]:
    """Adjacent-level comparisons of every varying parameter on every metric with data.

    Returns a list of dicts, one per comparison, in (group, param, metric, level) order:
      group (str label), group_keys (dict hardware/model/model_sha256/engine), param,
      aliases (list of other params that split the samples identically; not tested again),
      metric, unit ("sample", or "run" for run-level metrics: one value per run),
      level_a, level_b (level_a sorts before level_b), n_a, n_b, mean_a, mean_b (marginal means),
      ci_a, ci_b ((low, high) 95% t-interval of the marginal mean, (None, None) for n < 2),
      diff, rel_diff (B - A and (B - A) / A: of the marginal means, or stratum-adjusted when
        `adjusted`; rel_diff NaN when the base is 0),
      adjusted (bool: diff/rel_diff/p come from the stratified comparison),
      test ("welch" | "permutation" | "stratified" | "none" when nothing could be tested),
      p_value (NaN for "none"), p_holm (Holm over all tested comparisons of this call),
      significant (p_holm < alpha and |rel_diff| >= min_effect and not same_effective),
      same_effective (the two levels are the same effective configurations),
      load_effect (bool), confounded (bool: unbalanced and no shared combination of the other
        parameters), note ("; "-joined plain-words reasons, ending "significant" or
        "not significant").

    Samples measured in rounds (a `round` column with two or more rounds in a group) are
    compared blocked by round: the differences are taken within each round (and combination of
    the other parameters), so a drift of the machine from round to round cancels. `drift`
    (metric -> relative drift the same sweep measured, harness.analysis.noise) raises the
    minimum effect of that metric: a difference no larger than the drift is not called an effect.
    """
    # Values too large for float arithmetic (1e308) give inf / NaN statistics, never a warning:
    # analysis code returns data, it does not print.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _effects(df, metrics, alpha, min_effect, seed, drift or {})


def _effects(df: pd.DataFrame, metrics, alpha: float, min_effect: float, seed: int, drift: dict) -> list[dict]:
    df = df.reset_index(drop=True)
    ok = ok_mask(df)
    cfg = config_keys(df)
    d = df.loc[ok].copy()
    d["_cfg"] = pd.factorize(cfg[ok])[0]
    d["_loaded"] = (d["load_reused"] == False).fillna(False).astype(bool)  # noqa: E712 (nullable)
    d["_lknown"] = d["load_reused"].notna().astype(bool)
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
        names = [p for p, _ in params]
        blocked = _blocked(sub)
        if blocked:
            sub = sub.assign(_block=sub["round"].astype("float64"))
        frames = {"sample": sub}
        if any(m in RUN_LEVEL_METRICS for m in metrics):
            frames["run"] = _per_run(sub, [m for m in metrics if m in RUN_LEVEL_METRICS], names)
        coded = {u: _Coded(f, names + (["_block"] if blocked and u == "sample" else [])) for u, f in frames.items()}
        for p, aliases in params:
            others = [q for q in names if q != p and q != _LINKED.get(p)]
            load_param = any(x in LOAD_PARAMS for x in [p, *aliases])
            prepared = {u: _Levels(coded[u], p, others + (["_block"] if blocked and u == "sample" else []),
                                   blocked=blocked and u == "sample") for u in frames}
            for m in metrics:
                unit = "run" if m in RUN_LEVEL_METRICS else "sample"
                for c in prepared[unit].compare(frames[unit][m], load_param, seed):
                    comps.append({"group": label, "group_keys": dict(gkeys), "param": p, "aliases": list(aliases),
                                  "metric": m, "unit": unit, "blocked": blocked and unit == "sample",
                                  "drift": drift.get(m), **c})
    finish(comps, alpha, min_effect)
    return comps


def _blocked(sub: pd.DataFrame) -> bool:
    """Were the samples of this group measured in rounds (every ok sample knows its round, and
    there are at least two)?"""
    if "round" not in sub.columns:
        return False
    r = sub["round"]
    return bool(r.notna().all() and r.nunique() >= 2)


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


def _per_run(sub: pd.DataFrame, run_metrics: list[str], params: list[str]) -> pd.DataFrame:
    """One row per run for run-level metrics: the run's params and config key, metric means, and
    whether the run loaded its model."""
    rk = run_keys(sub)
    g = sub.groupby(rk, sort=False)
    out = g[params + ["_cfg"]].first()
    out[run_metrics] = g[run_metrics].mean()
    out["_loaded"] = g["_loaded"].any()
    out["_lknown"] = g["_lknown"].any()
    return out.reset_index(drop=True)


class _Coded:
    """Integer codes of the tested params of one frame (-1 = missing), computed once per group."""

    def __init__(self, f: pd.DataFrame, params: list[str]):
        self.f = f
        self.codes, self.uniques = {}, {}
        for p in params:
            self.codes[p], self.uniques[p] = pd.factorize(f[p].astype(object), use_na_sentinel=True)

    def combined(self, cols: list[str]) -> np.ndarray:
        """One code per distinct combination of `cols` (missing is a value of its own)."""
        key = np.zeros(len(self.f), dtype=np.int64)
        for c in cols:
            codes = self.codes[c].astype(np.int64) + 1
            key = key * (int(codes.max()) + 1) + codes
            if key.max() > 2 ** 40:  # keep the mixed radix small
                key = np.unique(key, return_inverse=True)[1].astype(np.int64)
        return np.unique(key, return_inverse=True)[1].astype(np.int64)


class _Levels:
    """The levels of one parameter in one frame, and the strata (combinations of the other
    varying parameters) of its rows; reused for every metric."""

    def __init__(self, coded: _Coded, p: str, others: list[str], blocked: bool = False):
        f = coded.f
        self.blocked = blocked
        uniq = list(coded.uniques[p])
        order = sorted(range(len(uniq)), key=lambda i: natural_key(uniq[i]))
        self.values = [uniq[i] for i in order]
        rank = np.empty(len(uniq) + 1, dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(uniq))
        rank[-1] = -1  # code -1 (missing) indexes the last slot
        self.level = rank[coded.codes[p]]
        self.stratum = coded.combined(others)
        self.cfg = f["_cfg"].to_numpy(dtype=np.int64)
        self.loaded = f["_loaded"].to_numpy(dtype=bool)
        self.known = f["_lknown"].to_numpy(dtype=bool)

    def compare(self, metric: pd.Series, load_param: bool, seed: int) -> list[dict]:
        v = metric.to_numpy(dtype=float, na_value=np.nan)
        use = np.isfinite(v) & (self.level >= 0)
        lv, v, st = self.level[use], v[use], self.stratum[use]
        L = len(self.values)
        if L < 2 or v.size < 2:
            return []
        n = np.bincount(lv, minlength=L)
        levels = np.flatnonzero(n)
        if levels.size < 2:
            return []
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(lv, weights=v, minlength=L) / n
            var = np.bincount(lv, weights=(v - mean[lv]) ** 2, minlength=L) / (n - 1)
            half = special.stdtrit(np.maximum(n - 1, 1), 0.975) * np.sqrt(var / n)
        var = np.where(n >= 2, var, np.nan)
        loaded = np.bincount(lv, weights=self.loaded[use], minlength=L) > 0
        known = np.bincount(lv, weights=self.known[use], minlength=L) > 0
        pairs = np.unique(lv * (int(self.cfg.max()) + 1) + self.cfg[use])
        cfg_of = pairs // (int(self.cfg.max()) + 1)
        cfgsets = [frozenset(x) for x in np.split(pairs % (int(self.cfg.max()) + 1),
                                                  np.searchsorted(cfg_of, np.arange(1, L)))]
        # strata x levels cells: counts, means, within-cell sums of squares
        _, st = np.unique(st, return_inverse=True)
        S = int(st.max()) + 1
        cell = st * L + lv
        cn = np.bincount(cell, minlength=S * L).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = np.bincount(cell, weights=v, minlength=S * L) / cn
        sse = np.bincount(cell, weights=(v - np.nan_to_num(cm)[cell]) ** 2, minlength=S * L)
        cn, cm, sse = cn.reshape(S, L), cm.reshape(S, L), sse.reshape(S, L)
        out = []
        for a, b in zip(levels, levels[1:]):
            same_eff = cfgsets[a] == cfgsets[b]
            reload = bool(known[a] and known[b] and loaded[a] != loaded[b]) and not load_param
            na_s, nb_s = cn[:, a], cn[:, b]
            # Blocked by round: always within strata (rounds x other parameters), so drift cancels.
            balanced = bool(np.all(na_s * n[b] == nb_s * n[a])) and not self.blocked
            shared = (na_s > 0) & (nb_s > 0)
            confounded, adjusted = False, False
            diff, base = mean[b] - mean[a], mean[a]
            if balanced or not shared.any():
                confounded = not balanced
                test, p, why = two_level_test(n[a], mean[a], var[a], n[b], mean[b], var[b],
                                              lambda: (v[lv == a], v[lv == b]), seed)
            else:
                adjusted = True
                diff, base, test, p, why = stratified_test(na_s[shared], nb_s[shared], cm[shared, a],
                                                       cm[shared, b], sse[shared, a] + sse[shared, b])
            ci = [(None, None) if not np.isfinite(half[x]) or n[x] < 2
                  else (float(mean[x] - half[x]), float(mean[x] + half[x])) for x in (a, b)]
            out.append({"level_a": _plain(self.values[a]), "level_b": _plain(self.values[b]),
                        "n_a": int(n[a]), "n_b": int(n[b]), "mean_a": float(mean[a]), "mean_b": float(mean[b]),
                        "ci_a": ci[0], "ci_b": ci[1],
                        "diff": float(diff), "rel_diff": float(diff / base) if base else math.nan,
                        "adjusted": adjusted, "test": test, "p_value": p, "p_holm": math.nan,
                        "significant": False, "same_effective": same_eff, "load_effect": bool(reload),
                        "confounded": confounded, "why": why, "load_param": bool(load_param and not same_eff)})
        return out


def _plain(v):
    return v.item() if hasattr(v, "item") else v


