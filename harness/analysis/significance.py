"""The significance tests behind effects and comparisons, from summary statistics where possible:
Holm-Bonferroni adjustment, Welch's t-test, exact and resampled permutation tests of a difference
of means, and the stratified comparison of two levels within matched cells.

Pure functions of numbers; they know nothing of tables, parameters or metrics.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import special

PERMUTATION_RESAMPLES = 9999
MIN_N_WELCH = 3


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


def constant_permutation_p(n_a: int, n_b: int, equal: bool) -> float:
    """Exact two-sided permutation p-value of the difference of means when each side is constant:
    1 when the two constants are equal; else only the observed split (and its mirror image when
    n_a == n_b) is as extreme, out of C(n_a + n_b, n_a) splits."""
    if equal:
        return 1.0
    extreme = 2 if n_a == n_b else 1
    return min(1.0, extreme / math.comb(n_a + n_b, n_a))


def welch_p(n_a, mean_a, var_a, n_b, mean_b, var_b) -> float:
    """Two-sided p of Welch's t-test from summary statistics (what scipy.stats.ttest_ind with
    equal_var=False computes from the samples)."""
    return float(welch_p_array(n_a, mean_a, var_a, n_b, mean_b, var_b))


def welch_p_array(n_a, mean_a, var_a, n_b, mean_b, var_b) -> np.ndarray:
    """welch_p element-wise over arrays of summaries (scipy.stats.ttest_ind_from_stats with
    equal_var=False); NaN where both variances are zero."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        sa, sb = np.asarray(var_a, dtype=float) / n_a, np.asarray(var_b, dtype=float) / n_b
        se2 = sa + sb
        df = se2 ** 2 / (sa ** 2 / (n_a - 1) + sb ** 2 / (n_b - 1))
        p = 2 * special.stdtr(df, -np.abs(np.subtract(mean_b, mean_a)) / np.sqrt(se2))
    return np.where(se2 > 0, p, np.nan)


def one_sample_t_p(d) -> float:
    """Two-sided p of the one-sample t-test of mean(d) == 0 (scipy.stats.ttest_1samp's p)."""
    d = np.asarray(d, dtype=float)
    se = float(np.std(d, ddof=1)) / math.sqrt(d.size)
    return float(2 * special.stdtr(d.size - 1, -abs(float(np.mean(d))) / se))


def exact_permutation_p(a, b) -> float:
    """Two-sided p of the difference in means over every split of the pooled values into groups of
    a's and b's sizes (for a sample of one, that is one split per pooled value)."""
    pooled = np.concatenate([a, b])
    observed = abs(float(np.mean(a) - np.mean(b)))
    total, n = float(pooled.sum()), a.size
    hits = count = 0
    for idx in itertools.combinations(range(pooled.size), n):
        s_a = float(pooled[list(idx)].sum())
        diff = abs(s_a / n - (total - s_a) / (pooled.size - n))
        hits += diff >= observed - 1e-12 * max(1.0, observed)
        count += 1
    return hits / count


def mean_diff(x, y, axis=-1):
    """Difference of means along `axis` (the permutation test's statistic, vectorised)."""
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def two_level_test(n_a, mean_a, var_a, n_b, mean_b, var_b, samples, seed: int) -> tuple[str, float, str]:
    """(test name, two-sided p, reason for the permutation test or "") of level b against level a:
    Welch's t-test from the summaries, or a permutation test when a side has fewer than
    MIN_N_WELCH values or no variance. `samples()` returns the two arrays, needed only then."""
    small = n_a < MIN_N_WELCH or n_b < MIN_N_WELCH
    # float round-off leaves ~1e-30 of "variance" in a constant column: that is none
    flat = var_a <= (1e-12 * abs(mean_a)) ** 2 or var_b <= (1e-12 * abs(mean_b)) ** 2
    if not small and not flat:
        return "welch", welch_p(n_a, mean_a, var_a, n_b, mean_b, var_b), ""
    why = f"permutation test (n < {MIN_N_WELCH})" if small else "permutation test (zero variance)"
    a, b = samples()
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "permutation", constant_permutation_p(a.size, b.size, bool(a[0] == b[0])), why
    if min(a.size, b.size) < 2:  # scipy needs two observations per sample: enumerate exactly
        return "permutation", exact_permutation_p(a, b), why
    from scipy import stats  # only here: scipy.stats costs a second to import

    res = stats.permutation_test((a, b), mean_diff, vectorized=True, n_resamples=PERMUTATION_RESAMPLES,
                               permutation_type="independent", alternative="two-sided",
                               rng=np.random.default_rng(seed), batch=max(1, 2_000_000 // (a.size + b.size)))
    return "permutation", float(min(1.0, res.pvalue)), why


def stratified_test(na, nb, ma, mb, sse) -> tuple[float, float, str, float, str]:
    """(diff, base, test, p, why) of level b vs a within matched strata: per stratum the counts
    na/nb, means ma/mb and pooled within-cell sum of squares sse (arrays over the shared strata).
    The difference is the inverse-variance weighted mean of the per-stratum differences; the test
    a t-test with the pooled within-cell variance, or a paired t-test over the strata when no
    cell has replicates."""
    w = na * nb / (na + nb)
    diff = float(np.sum(w * (mb - ma)) / w.sum())
    base = float(np.sum(w * ma) / w.sum())
    df = float(np.sum(na + nb) - 2 * na.size)
    why = "unbalanced design: tested within matching combinations of the other parameters"
    total = float(sse.sum())
    if df >= 1 and total > 0:
        se = math.sqrt(total / df / w.sum())
        return diff, base, "stratified", float(2 * special.stdtr(df, -abs(diff) / se)), why
    d = mb - ma
    if d.size >= 3 and np.ptp(d) > 0:
        return diff, base, "stratified", one_sample_t_p(d), why + " (paired over them)"
    return diff, base, "none", math.nan, why + "; too few replicates to test"
