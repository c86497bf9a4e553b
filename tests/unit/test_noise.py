"""Drift, order trends and the noise floor (harness.analysis.noise), and effects blocked by round:
a drift of the machine between rounds cancels, and a difference no larger than the measured drift
is not called an effect."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.analysis import noise, table
from harness.analysis.effects import effects

GROUP = {"hardware": "cpu", "model": "m", "engine": "e"}


def sample(**kw) -> dict:
    return table.empty_row() | GROUP | {"status": "ok"} | kw


def test_line_fit_recovers_a_slope_and_tests_it():
    x = np.arange(20.0)
    fit = noise.line_fit(x, 3.0 - 0.5 * x + np.random.default_rng(0).normal(0, 0.01, 20))
    assert fit["slope"] == pytest.approx(-0.5, abs=0.01) and fit["p"] < 1e-10 and fit["x_span"] == 19
    flat = noise.line_fit(x, np.random.default_rng(1).normal(10, 1, 20))
    assert flat["p"] > 0.05
    assert noise.line_fit([1, 2], [3, 4]) is None and noise.line_fit([1, 1, 1], [1, 2, 3]) is None


def _drift_doc(values):
    return {"samples": [{"round": i // 2, "position": "start" if i % 2 == 0 else "end", "order": 5 * i,
                         "decode_tps": v} for i, v in enumerate(values)]}


def test_control_drift_is_the_change_over_the_sweep_relative_to_the_mean():
    vals = list(np.linspace(50.0, 45.0, 6))  # 10% of 50 lost linearly over three rounds
    d = noise.control_drift(_drift_doc(vals))["decode_tps"]
    assert d["rel"] == pytest.approx(-5.0 / np.mean(vals), rel=1e-6)
    lo, hi = d["rel_ci"]
    assert lo <= d["rel"] <= hi and d["first_round_mean"] > d["last_round_mean"]
    steady = noise.control_drift(_drift_doc([50, 50.5, 49.6, 50.2, 49.9, 50.1]))["decode_tps"]
    assert abs(steady["rel"]) < 0.02 and steady["rel_ci"][0] < 0 < steady["rel_ci"][1]


def test_find_drift_reads_sweep_folders_and_skips_broken_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "drift.json").write_text(json.dumps(_drift_doc([1, 2, 3, 4])))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "drift.json").write_text("{not json")
    found = noise.find_drift([tmp_path])
    assert [p.name for p, _ in found] == ["a"]
    assert [p.name for p, _ in noise.find_drift([tmp_path / "a"])] == ["a"]


def test_minimum_detectable_effect_and_samples_needed():
    # (t_0.975,8 + t_0.8,8) * 0.05 * sqrt(2/5)
    assert noise.mde(0.05, 5) == pytest.approx((2.306 + 0.889) * 0.05 * math.sqrt(0.4), rel=1e-3)
    assert noise.mde(0.05, 1) is None and noise.mde(float("nan"), 5) is None
    assert noise.reps_for(0.02) == 16  # 2 * (2.8 * 0.02 / 0.02)^2 = 15.7
    assert noise.reps_for(0.001) == 2
    assert noise.mde(0.01, 20) < noise.mde(0.01, 5) < noise.mde(0.05, 5)


def _rounds(effect: float, drift_per_round: float, rounds: int = 5, sd: float = 0.002, seed: int = 3):
    """Two temperatures measured in every round; the machine loses `drift_per_round` per round."""
    rng = np.random.default_rng(seed)
    rows, order = [], 0
    for r in range(rounds):
        base = 50.0 * (1 - drift_per_round * r)
        for temp, mult in ((0.2, 1.0), (0.8, 1.0 + effect)):
            rows.append(sample(run_id=f"t{temp}", rep=r, round=r, order=order, temperature=temp,
                               decode_tps=base * mult * (1 + rng.normal(0, sd))))
            order += 1
    return rows


def test_blocking_by_round_finds_a_small_effect_under_drift():
    rows = _rounds(effect=0.03, drift_per_round=0.08)
    c = [x for x in effects(table.frame(rows)) if x["metric"] == "decode_tps"][0]
    assert c["blocked"] and c["adjusted"] and "blocked by round" in c["note"]
    assert c["rel_diff"] == pytest.approx(0.03, abs=0.005) and c["significant"]
    # the same samples without their rounds: the drift swamps the 3% (marginal Welch test)
    plain = [dict(x, round=None, order=None) for x in rows]
    c2 = [x for x in effects(table.frame(plain)) if x["metric"] == "decode_tps"][0]
    assert not c2["blocked"] and not c2["significant"]


def test_a_difference_no_larger_than_the_measured_drift_is_not_an_effect():
    rows = _rounds(effect=0.03, drift_per_round=0.0)
    c = [x for x in effects(table.frame(rows), drift={"decode_tps": 0.05}) if x["metric"] == "decode_tps"][0]
    assert not c["significant"] and "no larger than the drift this sweep measured (5.0%)" in c["note"]
    c = [x for x in effects(table.frame(rows), drift={"decode_tps": 0.01}) if x["metric"] == "decode_tps"][0]
    assert c["significant"]


def test_order_trend_and_noise_floor_from_samples():
    rows = _rounds(effect=0.0, drift_per_round=0.05, rounds=6)
    df = table.frame(rows)
    t = noise.order_trend(df, "decode_tps")
    assert t["rel"] < -0.15 and t["p"] < 0.01  # 5% per round over 5 rounds
    flat = noise.order_trend(table.frame(_rounds(effect=0.0, drift_per_round=0.0, rounds=6)), "decode_tps")
    assert flat["p"] > 0.01
    nf = noise.noise_floor(df)["decode_tps"]
    assert nf["n"] == 6 and nf["cv"] > 0.05 and nf["mde"] > nf["cv"] and nf["reps_for_2pct"] > 6
