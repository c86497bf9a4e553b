"""Tests for harness.analysis.stats (configurations) and harness.analysis.best (best, pareto) on
synthetic tidy sample tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.analysis import table
from harness.analysis.best import best, non_dominated, pareto
from harness.analysis.stats import configurations, varying_params
from harness.metrics import summarize

GROUP = {"hardware": "EPYC | H100", "model": "gemma3-270m", "engine": "llama-cpp-python 0.3 gpu"}


def sample(**kw) -> dict:
    return table.empty_row() | GROUP | {"status": "ok"} | kw


def frame(rows) -> pd.DataFrame:
    return table.frame(rows)


def one(configs: pd.DataFrame, **match) -> pd.Series:
    sel = configs
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one configuration for {match}, got {len(sel)}"
    return sel.iloc[0]


# --- token-weighted decode rate ------------------------------------------------------------------

def test_weighted_decode_rate_differs_from_mean_of_rates():
    # 100 tokens in 1 s (100 tok/s) and 10 tokens in 0.5 s (20 tok/s): the mean of the rates is 60,
    # but 110 decode tokens took 1.5 s, i.e. 73.3 tok/s.
    rows = [sample(run_id="r1", rep=0, n_gen_tokens=101, decode_ms=1000.0, decode_tps=100.0),
            sample(run_id="r1", rep=1, n_gen_tokens=11, decode_ms=500.0, decode_tps=20.0)]
    c = configurations(frame(rows))
    assert len(c) == 1
    assert c.loc[0, "decode_tps_mean"] == pytest.approx(60.0)
    assert c.loc[0, "decode_tps_weighted"] == pytest.approx(110 / 1.5)


def test_weighted_rate_is_nan_without_token_counts():
    c = configurations(frame([sample(run_id="r1", rep=i, decode_tps=50.0 + i) for i in range(3)]))
    assert math.isnan(c.loc[0, "decode_tps_weighted"])
    assert c.loc[0, "decode_tps_mean"] == pytest.approx(51.0)


# --- failures ------------------------------------------------------------------------------------

def test_failed_samples_are_counted_not_averaged():
    ok = [sample(run_id="r1", rep=i, decode_tps=100.0 + i, ttft_ms=50.0) for i in range(3)]
    # the older tool stored failures as zeros; even when a failed row carries numbers, they are not data
    bad = [sample(run_id="r2", rep=i, status="failed", error="CUDA out of memory", decode_tps=0.0, ttft_ms=0.0)
           for i in range(2)]
    c = configurations(frame(ok + bad))
    assert len(c) == 1
    row = c.iloc[0]
    assert row["n_samples"] == 3 and row["n_failed"] == 2 and row["n_runs"] == 2
    assert row["decode_tps_n"] == 3
    assert row["decode_tps_mean"] == pytest.approx(101.0)
    assert row["decode_tps_min"] == pytest.approx(100.0)
    assert row["ttft_ms_mean"] == pytest.approx(50.0)


def test_configuration_with_only_failures_has_no_statistics():
    rows = [sample(run_id="a", rep=i, n_ctx=512, decode_tps=90.0 + i) for i in range(3)]
    rows += [sample(run_id="b", n_ctx=8192, status="failed", error="oom")]
    c = configurations(frame(rows))
    failed = one(c, n_ctx=8192.0)
    assert failed["n_samples"] == 0 and failed["n_failed"] == 1
    assert failed["decode_tps_n"] == 0 and math.isnan(failed["decode_tps_mean"])
    assert bool(failed["noisy"])


# --- effective configuration ---------------------------------------------------------------------

def test_offload_beyond_layer_count_is_one_configuration():
    rng = np.random.default_rng(1)
    rows = []
    for run, (req, eff) in enumerate([("40", 19), ("999", 19), ("10", 10)]):
        rows += [sample(run_id=f"r{run}", rep=i, n_gpu_layers=req, n_gpu_layers_effective=eff,
                        decode_tps=rng.normal(100, 1)) for i in range(3)]
    c = configurations(frame(rows))
    assert len(c) == 2
    full = one(c, n_gpu_layers_effective=19.0)
    assert full["requested_n_gpu_layers"] == "40,999"
    assert full["n_gpu_layers"] == "40,999"
    assert "n_gpu_layers" in full["merged_params"]
    assert full["n_samples"] == 6 and full["n_runs"] == 2
    assert one(c, n_gpu_layers_effective=10.0)["requested_n_gpu_layers"] == "10"


def test_equal_effective_id_is_one_configuration():
    rows = [sample(run_id=f"r{run}", rep=i, n_gpu_layers=req, effective_id="abc123", decode_tps=100.0 + i)
            for run, req in enumerate(["40", "999"]) for i in range(3)]
    rows += [sample(run_id="r9", rep=i, n_gpu_layers="5", effective_id="def456", decode_tps=50.0 + i)
             for i in range(3)]
    c = configurations(frame(rows))
    assert sorted(c["effective_id"]) == ["abc123", "def456"]
    merged = one(c, effective_id="abc123")
    assert merged["requested_n_gpu_layers"] == "40,999" and merged["n_samples"] == 6


def test_two_hardware_groups_are_never_pooled():
    rows = [sample(run_id="a", rep=i, hardware="EPYC | H100", decode_tps=200.0 + i) for i in range(3)]
    rows += [sample(run_id="b", rep=i, hardware="EPYC", decode_tps=20.0 + i) for i in range(3)]
    c = configurations(frame(rows))
    assert len(c) == 2
    assert one(c, hardware="EPYC | H100")["decode_tps_mean"] == pytest.approx(201.0)
    assert one(c, hardware="EPYC")["decode_tps_mean"] == pytest.approx(21.0)
    assert c["hardware_group"].nunique() == 2


def test_varying_params_ignores_constants_and_failed_samples():
    rows = [sample(run_id=f"r{t}", temperature=t, n_ctx=512, decode_tps=1.0) for t in (0.2, 0.7)]
    rows.append(sample(run_id="x", temperature=0.2, n_ctx=4096, status="failed"))
    assert varying_params(frame(rows)) == ["temperature"]


# --- statistics ----------------------------------------------------------------------------------

def test_statistics_match_summarize():
    vals = np.random.default_rng(7).normal(80, 4, 9)
    c = configurations(frame([sample(run_id="r", rep=i, decode_tps=v) for i, v in enumerate(vals)]))
    s = summarize(vals.tolist())
    row = c.iloc[0]
    for f in ("n", "mean", "median", "std", "cv", "min", "max", "ci95_low", "ci95_high"):
        assert row[f"decode_tps_{f}"] == pytest.approx(getattr(s, f)), f


def test_run_level_metric_counts_runs_not_repetitions():
    # VRAM is read once per run and repeated on its 5 samples: 2 runs are 2 values, not 10.
    rows = [sample(run_id=f"r{r}", rep=i, vram_used_mib=1000.0 + 10 * r, decode_tps=50.0 + i)
            for r in range(2) for i in range(5)]
    c = configurations(frame(rows))
    assert c.loc[0, "vram_used_mib_n"] == 2 and c.loc[0, "decode_tps_n"] == 10
    assert c.loc[0, "vram_used_mib_std"] == pytest.approx(np.std([1000.0, 1010.0], ddof=1))


def test_noisy_flags_cv_over_5_percent_and_small_n():
    rng = np.random.default_rng(3)

    def values(mean, cv, n):  # exactly the requested mean and CV
        z = rng.normal(size=n)
        z = (z - z.mean()) / z.std(ddof=1)
        return mean + z * cv * mean

    rows = [sample(run_id="noisy", rep=i, n_ctx=512, decode_tps=v, ttft_ms=40.0)
            for i, v in enumerate(values(100, 0.08, 10))]
    rows += [sample(run_id="few", rep=i, n_ctx=1024, decode_tps=100.0 + i * 0.1, ttft_ms=40.0) for i in range(2)]
    rows += [sample(run_id="clean", rep=i, n_ctx=2048, decode_tps=v, ttft_ms=40.0)
             for i, v in enumerate(values(100, 0.01, 10))]
    c = configurations(frame(rows))
    noisy, few, clean = one(c, n_ctx=512.0), one(c, n_ctx=1024.0), one(c, n_ctx=2048.0)
    assert noisy["decode_tps_cv"] == pytest.approx(0.08)
    assert bool(noisy["noisy"]) and "decode_tps CV 8.0%" in noisy["noise_reason"]
    assert bool(few["noisy"]) and "n=2" in few["noise_reason"]
    assert not bool(clean["noisy"]) and clean["noise_reason"] == ""


def test_output_is_sorted_naturally_by_varying_params():
    rows = [sample(run_id=f"r{n}", n_ctx=n, decode_tps=1.0) for n in (4096, 512, 1024)]
    assert list(configurations(frame(rows))["n_ctx"]) == [512.0, 1024.0, 4096.0]


# --- best and pareto -----------------------------------------------------------------------------

def _configs() -> pd.DataFrame:
    """Four hand-made configurations on one machine (C is dominated by A) and one on another."""
    def cfg(group, name, dec, dec_half, ttft, ttft_half, vram):
        return {"hardware_group": group, "name": name, "decode_tps_mean": dec,
                "decode_tps_ci95_low": dec - dec_half, "decode_tps_ci95_high": dec + dec_half,
                "ttft_ms_mean": ttft, "ttft_ms_ci95_low": ttft - ttft_half, "ttft_ms_ci95_high": ttft + ttft_half,
                "vram_used_mib_mean": vram, "energy_per_token_j_mean": math.nan}

    return pd.DataFrame([
        cfg("gpu", "A", 100.0, 1.0, 50.0, 1.0, 1000.0),
        cfg("gpu", "B", 80.0, 1.0, 40.0, 1.0, 900.0),
        cfg("gpu", "C", 70.0, 1.0, 60.0, 1.0, 1100.0),
        cfg("gpu", "D", 99.5, 1.5, 55.0, 1.0, 800.0),
        cfg("cpu", "E", 10.0, 0.5, 300.0, 5.0, math.nan),
    ])


def test_best_per_group_with_clear_flag():
    b = best(_configs())
    assert set(b) == {"gpu", "cpu"}
    fastest = b["gpu"]["max decode_tps"]
    assert fastest["name"] == "A" and fastest["runner_up"]["name"] == "D"
    assert fastest["clear"] is False and "overlap" in fastest["note"]
    quickest = b["gpu"]["min ttft_ms"]
    assert quickest["name"] == "B" and quickest["clear"] is True
    assert "min energy_per_token_j" not in b["gpu"]  # no data: skipped
    assert b["cpu"]["max decode_tps"]["name"] == "E" and b["cpu"]["max decode_tps"]["clear"] is True


def test_pareto_drops_the_dominated_configuration():
    p = pareto(_configs())
    assert sorted(p.loc[p["hardware_group"] == "gpu", "name"]) == ["A", "B", "D"]
    cpu = p[p["hardware_group"] == "cpu"]
    assert list(cpu["name"]) == ["E"]
    assert "vram_used_mib_mean" not in cpu["pareto_objectives"].iloc[0]  # all-NaN objective dropped
    assert "vram_used_mib_mean" in p.loc[p["name"] == "A", "pareto_objectives"].iloc[0]


def test_best_and_pareto_from_samples():
    rng = np.random.default_rng(11)
    rows = []
    for run, (n_ctx, dec, ttft) in enumerate([(512, 120, 30), (2048, 100, 45), (4096, 90, 80)]):
        rows += [sample(run_id=f"r{run}", rep=i, n_ctx=n_ctx, decode_tps=rng.normal(dec, 1),
                        ttft_ms=rng.normal(ttft, 0.5)) for i in range(5)]
    c = configurations(frame(rows))
    (group,) = best(c)
    assert best(c)[group]["max decode_tps"]["n_ctx"] == 512.0
    assert best(c)[group]["max decode_tps"]["clear"] is True
    assert list(pareto(c)["n_ctx"]) == [512.0]


def test_pareto_rejects_unknown_sense():
    with pytest.raises(ValueError, match="sense must be"):
        pareto(_configs(), objectives=(("decode_tps_mean", "biggest"),))


def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(100):
        x = rng.integers(0, 4, (int(rng.integers(1, 30)), int(rng.integers(1, 4)))).astype(float)
        brute = [not any((x[j] >= x[i]).all() and (x[j] > x[i]).any() for j in range(len(x)))
                 for i in range(len(x))]
        assert non_dominated(x).tolist() == brute
