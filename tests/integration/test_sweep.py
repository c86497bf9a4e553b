"""End to end through the CLI on the real default model: sweeps, resume, failure isolation,
equivalent points, the sweep index."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import TINY, copy_sweep, load_schema, run_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep_2x2(tiny_sweep, tmp_path_factory):
    """The session's real 2x2 sweep (n_ctx x temperature, load axis first; conftest.tiny_sweep),
    and the same sweep run again on a copy of its folder."""
    from conftest import run_harness

    root = tmp_path_factory.mktemp("sweep")
    copy_sweep(tiny_sweep.dir, root, report=True)
    args = [a if not a.startswith("results_dir=") else f"results_dir={root}" for a in tiny_sweep.args]
    second = run_harness(*args, cwd=root)
    return tiny_sweep.dir, tiny_sweep.result, second, root / "s"


def test_2x2_sweep_writes_four_valid_runs(sweep_2x2):
    import jsonschema

    sweep_dir, first, _, _ = sweep_2x2
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.strip().splitlines()[-1] == "4 ok, 0 failed, 0 skipped"
    recs = run_records(sweep_dir)
    assert len(recs) == 4
    schema = load_schema()
    for name, rec in recs.items():
        jsonschema.validate(rec, schema)
        assert rec["status"] == "ok" and rec["error"] is None
        assert len(rec["repetitions"]) == 3
        for rep in rec["repetitions"]:
            assert rep["n_gen_tokens"] == 8  # ignore_eos: fixed length
            assert 0 < rep["ttft_ms"] < rep["e2e_ms"]
            assert rep["decode_tps"] > 0 and rep["prefill_tps"] > 0
        assert rec["config"]["runtime"]["n_ctx"] in (256, 512)
        assert (sweep_dir / name / ".hydra" / "config.yaml").is_file()


def test_tokens_csv_has_reps_times_tokens_rows(sweep_2x2):
    sweep_dir, *_ = sweep_2x2
    for job in run_records(sweep_dir):
        with open(sweep_dir / job / "tokens.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 * 8
        assert {r["rep"] for r in rows} == {"0", "1", "2"}
        for rep in ("0", "1", "2"):
            t = [int(r["t_ns"]) for r in rows if r["rep"] == rep]
            assert t == sorted(t) and t[0] > 0


def test_runs_tables_and_sweep_json(sweep_2x2):
    import pandas as pd

    sweep_dir, *_ = sweep_2x2
    df = pd.read_csv(sweep_dir / "runs.csv")
    assert len(df) == 4
    assert sorted(df["n_ctx"]) == [256, 256, 512, 512]
    assert (df["status"] == "ok").all()
    assert df["decode_tps_mean"].gt(0).all()
    pq = pd.read_parquet(sweep_dir / "runs.parquet")
    assert list(pq["job"]) == list(df["job"])
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["status_counts"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert meta["state"] == "complete" and meta["n_runs"] == 4


def test_model_is_reused_while_load_parameters_are_equal(sweep_2x2):
    sweep_dir, *_ = sweep_2x2
    recs = list(run_records(sweep_dir).values())
    # Two load groups (n_ctx 256 and 512), two points each: the engine worker loads each model
    # once (the control point, the sweep's first, may be the one that loaded its group) and keeps
    # both loaded across the rounds.
    for n_ctx in (256, 512):
        group = [r for r in recs if r["config"]["runtime"]["n_ctx"] == n_ctx]
        assert len(group) == 2 and sum(not r["load"]["reused"] for r in group) <= 1
    assert max(r["load"]["loads_in_process"] for r in recs) == 2
    assert not any(r["load"].get("reloads") for r in recs)
    assert all(r["load"]["load_ms"] > 0 for r in recs)


def test_second_run_of_the_same_sweep_skips_everything(sweep_2x2):
    _, _, second, sweep_dir = sweep_2x2
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.strip().splitlines()[-1] == "0 ok, 0 failed, 4 skipped"
    # The skipped points keep their original records.
    assert len(run_records(sweep_dir)) == 4
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["invocations"] == 2


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path, harness_cli, model_path):
    long_prompt = "workload.prompt='" + "benchmark " * 400 + "'"
    r = harness_cli("run", "-m", "runtime.n_ctx=256,1024", long_prompt, *TINY, "workload.chat_template=false",
                    "report.auto=false", f"results_dir={tmp_path}", "sweep_name=f", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "1 ok, 1 failed, 0 skipped"
    recs = run_records(tmp_path / "f")
    by_ctx = {rec["config"]["runtime"]["n_ctx"]: rec for rec in recs.values()}
    failed, ok = by_ctx[256], by_ctx[1024]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "PromptTooLong" and "n_ctx=256" in failed["error"]["message"]
    assert failed["repetitions"] == []
    assert ok["status"] == "ok" and len(ok["repetitions"]) == 2
    import jsonschema

    jsonschema.validate(failed, load_schema())
    # A re-run retries only the failed point.
    again = harness_cli("run", "-m", "runtime.n_ctx=256,1024", long_prompt, *TINY, "workload.chat_template=false",
                        "report.auto=false", f"results_dir={tmp_path}", "sweep_name=f", cwd=tmp_path)
    assert again.stdout.strip().splitlines()[-1] == "0 ok, 1 failed, 1 skipped"


def test_equivalent_points_are_marked(tmp_path, harness_cli, model_path):
    """On this CPU-only build, n_gpu_layers 0 and 'all' both run 0 layers on a GPU: one configuration."""
    from harness import engine

    if engine.gpu_offload_supported():
        pytest.skip("GPU build: use 999 vs all instead (tested in unit tests of the plan)")
    r = harness_cli("run", "-m", "runtime.n_gpu_layers=0,all", *TINY, "bench.repetitions=1",
                    "report.auto=false", f"results_dir={tmp_path}", "sweep_name=e", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = sorted(run_records(tmp_path / "e").values(), key=lambda x: x["started_at"])
    assert [x["effective"]["n_gpu_layers_effective"] for x in recs] == [0, 0]
    assert recs[0]["effective"]["effective_id"] == recs[1]["effective"]["effective_id"]
    assert recs[1]["equivalent_to"] == [recs[0]["job_name"]]
    assert recs[1]["load"]["reused"] is True
    meta = json.loads((tmp_path / "e" / "sweep.json").read_text())
    assert meta["equivalent_groups"] == [sorted(x["job_name"] for x in recs)]
