"""Tests for harness.analysis.effects: marginal means, Welch / permutation tests, Holm correction,
load effects, same effective configurations, confounding in unbalanced sweeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from harness.analysis import table
from harness.analysis.effects import effect_summary, effects, holm, welch_p

GROUP = {"hardware": "EPYC | H100", "model": "gemma3-270m", "engine": "llama-cpp-python 0.3 gpu"}


def sample(**kw) -> dict:
    return table.empty_row() | GROUP | {"status": "ok"} | kw


def runs_of(values, *, run_prefix: str, per_run: int = 5, **params) -> list[dict]:
    """Samples with the given decode_tps values, `per_run` samples per run."""
    return [sample(run_id=f"{run_prefix}{i // per_run}", rep=i % per_run, decode_tps=float(v), **params)
            for i, v in enumerate(values)]


def find(comps, **match) -> list[dict]:
    return [c for c in comps if all(c[k] == v for k, v in match.items())]


def only(comps, **match) -> dict:
    hits = find(comps, **match)
    assert len(hits) == 1, f"expected one comparison for {match}, got {len(hits)}"
    return hits[0]


def test_identical_distributions_are_not_significant():
    rng = np.random.default_rng(42)
    rows = runs_of(rng.normal(100, 2, 10), run_prefix="a", temperature=0.2)
    rows += runs_of(rng.normal(100, 2, 10), run_prefix="b", temperature=0.8)
    c = only(effects(table.frame(rows)), param="temperature", metric="decode_tps")
    assert c["test"] == "welch" and c["n_a"] == 10 and c["n_b"] == 10
    assert c["significant"] is False and c["p_holm"] >= 0.05
    assert c["note"].endswith("not significant")


def test_twenty_percent_difference_is_significant_after_holm():
    rng = np.random.default_rng(5)
    rows = []
    for temp, mean in ((0.2, 100.0), (0.8, 120.0)):
        rows += [sample(run_id=f"t{temp}-{i // 5}", rep=i % 5, temperature=temp, decode_tps=v,
                        ttft_ms=t) for i, (v, t) in
                 enumerate(zip(rng.normal(mean, 0.02 * mean, 10), rng.normal(40, 1, 10)))]
    comps = effects(table.frame(rows))
    assert len(comps) == 2  # decode_tps and ttft_ms: Holm over both
    dec = only(comps, param="temperature", metric="decode_tps")
    assert dec["test"] == "welch"
    assert dec["rel_diff"] == pytest.approx(0.2, abs=0.03)
    assert dec["p_holm"] < 1e-6 and dec["significant"] is True
    assert dec["mean_a"] < dec["ci_b"][0]  # level CIs are returned and far apart
    assert only(comps, metric="ttft_ms")["significant"] is False
    summary = {(s["param"], s["metric"]): s for s in effect_summary(comps)}
    assert summary[("temperature", "decode_tps")]["verdict"] == "measurable effect"
    assert summary[("temperature", "ttft_ms")]["verdict"] == "no measurable effect"


def test_welch_p_from_summaries_matches_scipy():
    rng = np.random.default_rng(8)
    a, b = rng.normal(10, 1, 7), rng.normal(11, 3, 12)
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    got = welch_p(a.size, a.mean(), a.var(ddof=1), b.size, b.mean(), b.var(ddof=1))
    assert got == pytest.approx(expected, rel=1e-9)


def test_element_wise_welch_and_one_sample_t_match_scipy():
    from harness.analysis.significance import one_sample_t_p, welch_p_array

    rng = np.random.default_rng(9)
    n_a, n_b = rng.integers(2, 12, 50), rng.integers(2, 12, 50)
    m_a, m_b, s_a, s_b = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.01, 3, 50), rng.uniform(0.01, 3, 50)
    expected = stats.ttest_ind_from_stats(m_a, s_a, n_a, m_b, s_b, n_b, equal_var=False).pvalue
    assert welch_p_array(n_a, m_a, s_a ** 2, n_b, m_b, s_b ** 2) == pytest.approx(expected, rel=1e-9)
    zero = np.zeros(2)
    assert np.isnan(welch_p_array(np.full(2, 3), np.ones(2), zero, np.full(2, 3), np.array([1.0, 2.0]), zero)).all()
    for n in (3, 5, 11):
        d = rng.normal(0.3, 1, n)
        assert one_sample_t_p(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)


def test_holm_adjustment_values():
    adj = holm([0.03, 0.2, 0.5, float("nan")])
    assert adj[:3] == pytest.approx([0.09, 0.4, 0.5])
    assert np.isnan(adj[3])
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # monotone step-down


def test_borderline_p_is_not_significant_among_three_comparisons():
    # decode_tps differs with a raw Welch p of exactly 0.03; ttft_ms and prefill_tps do not differ.
    # Three comparisons: Holm makes it 0.09, not significant.
    base = np.array([98.0, 103.0, 95.0, 104.0, 100.0])
    other = np.array([101.0, 94.0, 102.0, 97.0, 106.0])
    shift = optimize.brentq(lambda s: stats.ttest_ind(base, other + s, equal_var=False).pvalue - 0.03, 0, 50)
    rows = []
    for temp, dec in ((0.2, base), (0.8, other + shift)):
        rows += [sample(run_id=f"t{temp}", rep=i, temperature=temp, decode_tps=d, ttft_ms=40.0 + i,
                        prefill_tps=1000.0 + i) for i, d in enumerate(dec)]
    comps = effects(table.frame(rows))
    assert len(comps) == 3
    dec = only(comps, metric="decode_tps")
    assert dec["p_value"] == pytest.approx(0.03)
    assert dec["p_holm"] == pytest.approx(0.09)
    assert dec["significant"] is False
    assert abs(dec["rel_diff"]) > 0.01  # not excluded by the minimum effect size: by Holm


def test_n_ctx_levels_loaded_separately_are_attributed_to_n_ctx():
    """A load-changing parameter reloads at every level by its nature; load time is outside every
    sample and each load is warmed up, so the difference is the parameter's, noted as separate loads."""
    rng = np.random.default_rng(9)
    rows = []
    for n_ctx, ttft in ((512, 30.0), (4096, 60.0)):
        rows += [sample(run_id=f"c{n_ctx}", rep=i, n_ctx=n_ctx, load_reused=False, ttft_ms=v,
                        decode_tps=rng.normal(100, 1)) for i, v in enumerate(rng.normal(ttft, 1, 5))]
    comps = effects(table.frame(rows))
    c = only(comps, param="n_ctx", metric="ttft_ms")
    assert c["load_effect"] is False and "each level is a separate load" in c["note"]
    assert c["significant"] is True
    s = [x for x in effect_summary(comps) if x["metric"] == "ttft_ms"][0]
    assert s["verdict"] == "measurable effect"


def test_sampling_param_is_a_load_effect_only_when_loads_differ():
    rng = np.random.default_rng(10)

    def rows_for(reused_first: bool):
        out = []
        for temp, reused in ((0.2, reused_first), (0.8, True)):
            out += [sample(run_id=f"t{temp}", rep=i, temperature=temp, load_reused=reused,
                           decode_tps=rng.normal(100, 1)) for i in range(5)]
        return table.frame(out)

    first_loaded = only(effects(rows_for(False)), param="temperature")
    assert first_loaded["load_effect"] is True and "model reload" in first_loaded["note"]
    both_reused = only(effects(rows_for(True)), param="temperature")
    assert both_reused["load_effect"] is False and "reload" not in both_reused["note"]


def test_same_effective_configuration_is_never_significant():
    # 40 and 999 layers on an 18-layer model are both "all 19": a planted 5% gap between them is
    # what the older tool reported as a finding.
    rng = np.random.default_rng(2)
    rows = runs_of(rng.normal(100, 0.5, 10), run_prefix="a", n_gpu_layers="40", n_gpu_layers_effective=19,
                   effective_id="e19")
    rows += runs_of(rng.normal(105, 0.5, 10), run_prefix="b", n_gpu_layers="999", n_gpu_layers_effective=19,
                    effective_id="e19")
    rows += runs_of(rng.normal(60, 0.5, 10), run_prefix="c", n_gpu_layers="10", n_gpu_layers_effective=10,
                    effective_id="e10")
    comps = effects(table.frame(rows))
    same = only(comps, param="n_gpu_layers", level_a="40", level_b="999")
    assert same["same_effective"] is True and same["p_value"] < 1e-6
    assert same["significant"] is False and "same effective configuration" in same["note"]
    real = only(comps, param="n_gpu_layers", level_a="10", level_b="40")
    assert real["significant"] is True and real["same_effective"] is False
    eff = only(comps, param="n_gpu_layers_effective")
    assert (eff["level_a"], eff["level_b"]) == (10.0, 19.0) and eff["significant"] is True


def test_numeric_string_levels_sort_numerically():
    rows = [sample(run_id=f"r{g}", rep=i, n_gpu_layers=g, decode_tps=float(i + int(g)))
            for g in ("8", "16", "100") for i in range(3)]
    comps = effects(table.frame(rows))
    assert [(c["level_a"], c["level_b"]) for c in comps] == [("8", "16"), ("16", "100")]


def test_small_samples_fall_back_to_permutation():
    rows = runs_of([100.0, 101.0], run_prefix="a", temperature=0.2)
    rows += runs_of([130.0, 131.0], run_prefix="b", temperature=0.8)
    c = only(effects(table.frame(rows)), param="temperature")
    assert c["test"] == "permutation" and "permutation test (n < 3)" in c["note"]
    # exact: 6 ways to split 4 values in 2+2, the observed split and its mirror are the extremes
    assert c["p_value"] == pytest.approx(2 / 6)
    assert c["significant"] is False


def test_a_single_sample_against_several_is_tested_exactly():
    # A configuration measured once (scipy's permutation test needs two per group): every one of
    # the 4 values can be the lone one; only 100 (the observed) is as far from the rest.
    rows = runs_of([100.0], run_prefix="a", temperature=0.2)
    rows += runs_of([130.0, 131.0, 132.0], run_prefix="b", temperature=0.8)
    c = only(effects(table.frame(rows)), param="temperature")
    assert c["test"] == "permutation"
    assert c["p_value"] == pytest.approx(1 / 4)


def test_zero_variance_falls_back_to_permutation():
    rows = runs_of([100.0] * 6, run_prefix="a", temperature=0.2)
    rows += runs_of([100.0] * 6, run_prefix="b", temperature=0.8)
    c = only(effects(table.frame(rows)), param="temperature")
    assert c["test"] == "permutation" and "zero variance" in c["note"]
    assert c["p_value"] == 1.0 and c["significant"] is False


def test_unbalanced_sweep_is_not_confounded():
    # top_p does nothing; n_ctx doubles TTFT. top_p=1.0 ran mostly at n_ctx 4096, so its marginal
    # mean TTFT is much higher. Tested within equal n_ctx, top_p shows no effect.
    rng = np.random.default_rng(4)
    plan = {(0.9, 512): 8, (0.9, 4096): 2, (1.0, 512): 2, (1.0, 4096): 8}
    rows = []
    for (top_p, n_ctx), n in plan.items():
        rows += [sample(run_id=f"{top_p}-{n_ctx}", rep=i, top_p=top_p, n_ctx=n_ctx,
                        ttft_ms=rng.normal(30 if n_ctx == 512 else 60, 1)) for i in range(n)]
    comps = effects(table.frame(rows))
    c = only(comps, param="top_p", metric="ttft_ms")
    assert c["mean_b"] - c["mean_a"] > 10  # the marginal means differ a lot ...
    assert c["adjusted"] is True and c["test"] == "stratified"
    assert abs(c["rel_diff"]) < 0.05 and c["significant"] is False  # ... the parameter does not
    n_ctx = only(comps, param="n_ctx", metric="ttft_ms")
    assert n_ctx["significant"] is True and n_ctx["rel_diff"] == pytest.approx(1.0, abs=0.1)


def test_groups_are_compared_separately_and_failures_ignored():
    rows = []
    for hw, gap in (("H100", 50.0), ("CPU", 0.0)):
        for temp in (0.2, 0.8):
            base = 100.0 + (gap if temp == 0.8 else 0.0)
            rows += [sample(run_id=f"{hw}{temp}", rep=i, hardware=hw, temperature=temp,
                            decode_tps=base + (i % 3)) for i in range(6)]
    rows.append(sample(run_id="x", hardware="CPU", temperature=0.8, status="failed", decode_tps=0.0))
    comps = effects(table.frame(rows))
    by_group = {c["group_keys"]["hardware"]: c for c in comps}
    assert set(by_group) == {"H100", "CPU"} and len(comps) == 2
    assert by_group["H100"]["significant"] is True
    assert by_group["CPU"]["significant"] is False and by_group["CPU"]["n_b"] == 6


def test_run_level_metric_uses_one_value_per_run():
    rows = []
    for temp, vram in ((0.2, 1000.0), (0.8, 1000.0)):
        for r in range(3):
            rows += [sample(run_id=f"{temp}-{r}", rep=i, temperature=temp, vram_used_mib=vram + r,
                            decode_tps=100.0 + i) for i in range(5)]
    c = only(effects(table.frame(rows), metrics=("vram_used_mib",)), metric="vram_used_mib")
    assert c["unit"] == "run" and (c["n_a"], c["n_b"]) == (3, 3)


def test_no_varying_param_means_no_comparisons():
    rows = runs_of([100.0, 101.0, 102.0], run_prefix="a", temperature=0.2)
    assert effects(table.frame(rows)) == []
    assert effects(pd.DataFrame(columns=list(table.NAMES))) == []


def test_values_too_large_for_float_arithmetic_raise_no_warning():
    import warnings

    rows = runs_of([1e308, 1e308, 1e308, 1.7e308], run_prefix="a", per_run=2, temperature=0.2)
    rows += runs_of([1e308, 1.5e308, 1.6e308, 1.7e308], run_prefix="b", per_run=2, temperature=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        comps = effects(table.frame(rows))
        effect_summary(comps)
    assert comps and not any(c["significant"] for c in comps)
