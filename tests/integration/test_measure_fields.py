"""One measurement path: a record has the same fields whichever caller made it (`harness run`, the
narrative agent's measured generation, which agent_ab repeats, and the `harness_bench` fixture),
down to the load, effective, repetition, telemetry and provenance blocks."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
from conftest import TINY, load_schema, run_records

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

SECTIONS = ("load", "effective", "telemetry", "provenance", "prompt", "roofline")


def _shape(rec: dict) -> dict:
    """The field names of a record: top level, each block, and a repetition."""
    out = {"": sorted(rec)}
    for s in SECTIONS:
        out[s] = sorted(rec.get(s) or {})
    out["repetition"] = sorted(rec["repetitions"][0]) if rec.get("repetitions") else []
    out["aggregates"] = sorted(rec.get("aggregates") or {})
    return out


@pytest.fixture(scope="module")
def run_record(tmp_path_factory) -> dict:
    from conftest import run_harness

    d = tmp_path_factory.mktemp("run")
    r = run_harness("run", *TINY, "report.auto=false", f"results_dir={d}", "sweep_name=s", cwd=d)
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = run_records(d / "s").values()
    return rec


def test_the_agent_path_records_what_a_run_records(run_record, tmp_path, model_path, monkeypatch):
    from harness.agent.measure import measure_once
    from harness.config import validate
    from harness.hydra_conf import compose
    from harness.plan import make_plan
    from harness.workload import build_prompt

    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")  # this session's locks only
    cfg = compose(list(TINY))
    rc = validate(cfg)
    plan = make_plan(rc, gpu_offload_supported=False, model_path=model_path)

    def make_prompt(model):
        return build_prompt(rc.workload, model, rc.sampling.seed), cfg

    from harness import devicelock

    try:
        m = measure_once(rc, plan, tmp_path / "agent", make_prompt, cfg=cfg)
    finally:
        devicelock.release_all()  # held for the run, as a sweep point holds it
    assert m.record.status == "ok", m.record.error
    rec = json.loads((tmp_path / "agent" / "run.json").read_text())
    jsonschema.validate(rec, load_schema())
    assert _shape(rec) == _shape(run_record)
    assert (tmp_path / "agent" / "tokens.csv").is_file() and (tmp_path / "agent" / "telemetry.csv").is_file()


def test_the_pytest_fixture_records_what_a_run_records(run_record, pytester, monkeypatch):
    home = os.environ.get("HOME")
    if home:
        monkeypatch.setenv("HOME", home)  # the default model and its sha256 cache live there
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")
    pytester.makepyfile(test_rec=f"""
import json

def test_rec(harness_bench):
    info = harness_bench({", ".join(repr(o) for o in TINY)})
    with open("record.json", "w") as f:
        json.dump(info["record"], f)
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    rec = json.loads((pytester.path / "record.json").read_text())
    jsonschema.validate(rec, load_schema())
    assert _shape(rec) == _shape(run_record)
    assert rec["timing_path"] == run_record["timing_path"]
    assert rec["repetitions"][0]["decode_engine_ms"] is not None
