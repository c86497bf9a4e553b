"""A real sweep measured in rounds: every repetition knows its round and place in the order, the
points of a load group are interleaved, the control point's drift record is written, the report
states drift and noise floor, and `harness calibrate` stores a noise floor the report cites."""

from __future__ import annotations

import json

import pytest
from conftest import run_records

pytestmark = pytest.mark.slow

BUDGET = ["workload.max_tokens=4", "bench.repetitions=2", "bench.warmup=0"]


def test_sweep_in_rounds_with_control_drift_and_noise_section(tmp_path, harness_cli):
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    r = harness_cli("run", "-m", "runtime.n_ctx=256,512", "sampling.temperature=0.2,1.0", *BUDGET,
                    f"results_dir={tmp_path}", "sweep_name=s", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = tmp_path / "s"
    recs = run_records(sweep)
    assert len(recs) == 4
    reps = [(x["round"], x["order"], name) for name, rec in recs.items() for x in rec["repetitions"]]
    assert sorted(x[0] for x in reps) == [0, 0, 0, 0, 1, 1, 1, 1]  # one repetition per point per round
    orders = sorted(x[1] for x in reps)
    assert len(set(orders)) == 8
    # within a round the two points of a load group follow each other (the group is not split)
    for rnd in (0, 1):
        seq = [name for _, _, name in sorted((o, 0, n) for rr, o, n in reps if rr == rnd)]
        ctx = ["n_ctx=256" in n for n in seq]
        assert ctx in ([True, True, False, False], [False, False, True, True])
    drift = json.loads((sweep / "drift.json").read_text())
    assert [(s["round"], s["position"]) for s in drift["samples"]] == [(0, "start"), (0, "end"), (1, "start"), (1, "end")]
    assert all(s["decode_tps"] > 0 for s in drift["samples"])
    assert drift["control"]["overrides"][:2] == ["runtime.n_ctx=256", "sampling.temperature=0.2"]
    # every point's record is complete; the control's repetitions are not in any point's record
    assert all(len(rec["repetitions"]) == 2 and rec["status"] == "ok" for rec in recs.values())
    report = (sweep / "report" / "report.md").read_text()
    assert "Noise and drift" in report and "min. detectable effect" in report
    assert "| decode_tps |" in report.split("Noise and drift")[1]


def test_calibrate_stores_a_noise_floor_that_reports_cite(tmp_path, harness_cli):
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    c = harness_cli("calibrate", "bench.repetitions=3", "workload.max_tokens=4", cwd=tmp_path, env=env)
    assert c.returncode == 0, c.stderr[-3000:]
    doc = json.loads((tmp_path / "cache" / "noise_floor.json").read_text())
    assert doc["n"] == 3 and set(doc["metrics"]) == {"decode_tps", "prefill_tps", "ttft_ms", "e2e_ms"}
    d = doc["metrics"]["decode_tps"]
    assert d["cv"] >= 0 and d["aa_ratio"] > 0 and d["reps_for_2pct"] >= 2
    assert "decode_tps" in c.stdout and "noise floor:" in c.stdout
    r = harness_cli("run", "-m", "sampling.temperature=0.2,1.0", *BUDGET, f"results_dir={tmp_path}",
                    "sweep_name=s", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "calibrated noise floor (harness calibrate" in (tmp_path / "s" / "report" / "report.md").read_text()
    bad = harness_cli("calibrate", "bench.repetitions=0", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: bench.repetitions")
