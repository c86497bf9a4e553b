"""RunRecord (run.json): lossless round trip, version check, the JSON Schema in results/schema/,
derived aggregates, and a golden v1 file that must stay loadable."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from harness import sweepindex
from harness.gguf import GGUFInfo
from harness.metrics import AGGREGATED, aggregate, rep_metrics
from harness.record import SCHEMA_VERSION, Repetition, RunError, RunRecord
from harness.store import write_json

ROOT = Path(__file__).resolve().parents[2]
RUN_SCHEMA = ROOT / "results/schema/run.schema.json"
SWEEP_SCHEMA = ROOT / "results/schema/sweep.schema.json"
GOLDEN_V1 = ROOT / "tests/data/run_v1.json"

MS = 1_000_000  # ns per ms
MODEL_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
WARNING = ("runtime.n_gpu_layers=all asks for GPU offload, but this llama.cpp build has no GPU backend: "
           "running on the CPU (n_gpu_layers_effective=0)")


@pytest.fixture(scope="module")
def run_validator() -> Draft202012Validator:
    schema = json.loads(RUN_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# --- synthetic records, built with the package's own classes --------------------------------------

def _repetition(rep: int, seed: int, jitter_ns: int) -> Repetition:
    """8 tokens of a 31-token prompt: prefill ~112 ms, then ~18 ms per token."""
    t_request = 5_000_000_000 + rep * 10**9
    first = t_request + 113 * MS + jitter_ns
    gaps = [18 * MS, 17 * MS + 900_000, 17 * MS + 500_000, 33 * MS, 19 * MS + jitter_ns, 18 * MS, 18 * MS + 300_000]
    tokens = [first]
    for g in gaps:
        tokens.append(tokens[-1] + g)
    m = rep_metrics(rep, t_request, tokens, n_prompt_tokens=31, prompt_eval_ms=111.9 + rep * 0.3)
    itl = tuple((b - a) / MS for a, b in zip(tokens, tokens[1:]))
    return Repetition(metrics=m, seed=seed, t_prefill_end_ms=112.8 + rep * 0.1, engine_eval_ms=130.0 + rep,
                      engine_n_eval=len(tokens) - 1, itl_ms=itl)


def _config() -> dict:
    return {
        "model": {"name": "gemma3_270m", "family": "gemma3", "source": "package", "path": None,
                  "files": ["gemma-3-270m-q4_k_m.gguf"]},
        "runtime": {"n_gpu_layers": "all", "n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "n_threads": None,
                    "n_threads_batch": None, "flash_attn": "auto", "type_k": "f16", "type_v": "f16",
                    "use_mmap": True, "offload_kqv": True, "require_gpu": False},
        "sampling": {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0,
                     "seed": 42},
        "workload": {"name": "short_chat", "kind": "text", "chat_template": True, "system": None,
                     "prompt": "Explain the KV cache.", "max_tokens": 8, "prompt_tokens": None},
        "bench": {"warmup": 1, "repetitions": 2, "ignore_eos": True, "timing": "auto"},
        "results_dir": "results",
        "sweep_name": "s1",
    }


def _model_provenance() -> dict:
    info = GGUFInfo(path="models/gemma-3-270m-q4_k_m.gguf", size_bytes=253113024, version=3,
                    architecture="gemma3", name="Gemma 3 270m", n_layers=18, n_ctx_train=32768, n_embd=640,
                    n_head=4, n_head_kv=1, file_type=15, quantization="Q4_K_M", n_tensors=236, n_kv=33,
                    n_vocab=262144, tensor_data_bytes=246587904, metadata={"general.architecture": "gemma3"})
    d = info.to_dict()
    d.pop("metadata")  # as the runner does
    d["sha256"] = MODEL_SHA
    return d


def _provenance() -> dict:
    return {
        "harness": {"version": "0.1.0", "sha": "b536c57d95a56367e195f9bbeb05551bd52a847c", "dirty": False},
        "engine": {"llama_cpp_python": "0.3.36", "gpu_offload_supported": False, "system_info": "CPU : AVX2 = 1 |"},
        "timing_path": "python",
        "cuda_visible_devices": None,
        "host": {"hostname": "host", "cpu_model": "AMD EPYC", "cpu_cores_physical": 2, "cpu_cores_logical": 2,
                 "cpu_affinity": 2, "ram_total_mib": 24105, "os": "Linux-6.1-x86_64", "python": "3.11.7"},
        "gpu": {"available": False, "reason": "NVML unavailable: NVML Shared Library Not Found", "gpus": []},
        "model": _model_provenance(),
    }


def _effective(n_ctx: int = 2048, effective_id: str = "0bbf179bef2c7a67") -> dict:
    return {
        "model_path": "models/gemma-3-270m-q4_k_m.gguf", "n_gpu_layers_requested": "all",
        "n_gpu_layers_effective": 0, "n_offloadable_layers": 19, "n_ctx_requested": n_ctx,
        "n_ctx_effective": n_ctx, "n_ctx_train": 32768, "gpu_offload_supported": False,
        "effective_id": effective_id, "warnings": [WARNING], "flash_attn_effective": "on",
        "n_threads": 2, "n_threads_batch": 2,
    }


def _base(**kw) -> dict:
    d = dict(run_id="47f2323a6edd44bc98bb02b1a32fd28d", sweep_name="s1",
             job_name="bench.repetitions=2,workload.max_tokens=8", started_at="2026-01-01T00:00:00.000+00:00",
             ended_at="2026-01-01T00:00:03.000+00:00",
             overrides=("workload.max_tokens=8", "bench.repetitions=2"), config=_config())
    d.update(kw)
    return d


def ok_record() -> RunRecord:
    reps = (_repetition(0, 42, 0), _repetition(1, 43, 400_000))
    return RunRecord(
        status="ok", effective=_effective(), load={"load_ms": 822.08, "reused": False, "loads_in_process": 1},
        prompt={"n_tokens": 31, "chat_template_applied": True, "kind": "text", "note": "",
                "text_head": "<start_of_turn>user\nExplain the KV cache."},
        timing_path="python", warmup_done=1, repetitions=reps,
        aggregates=aggregate([r.metrics for r in reps], [r.itl_ms for r in reps]),
        provenance=_provenance(), warnings=(WARNING,), **_base())


def failed_record() -> RunRecord:
    """Failed in the measure phase after the model loaded: nothing measured, provenance kept."""
    return RunRecord(
        status="failed", effective=_effective(256, "05a06cbe2fca43d4"),
        load={"load_ms": 743.6, "reused": False, "loads_in_process": 1},
        prompt={"n_tokens": 31, "chat_template_applied": True, "kind": "text", "note": "", "text_head": "x"},
        timing_path="python", provenance=_provenance(), warnings=(WARNING,),
        error=RunError("PromptTooLong", "prompt of 31 tokens + 240 to generate does not fit in n_ctx=256",
                       "measure"),
        **_base(job_name="runtime.n_ctx=256,workload.max_tokens=240"))


def plan_failed_record() -> RunRecord:
    """Failed before planning finished: effective, load and provenance are empty."""
    return RunRecord(status="failed", error=RunError("ConfigError", "model.path: must be an existing GGUF file",
                                                     "plan"), **_base(job_name="model.path=missing.gguf"))


# --- (a) round trip -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [ok_record, failed_record, plan_failed_record])
def test_round_trip_through_json_is_lossless(make):
    rec = make()
    d = rec.to_dict()
    back = RunRecord.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back.to_dict() == d
    assert back == rec  # the dataclasses too (tuples restored, error rebuilt as RunError)


def test_to_dict_emits_every_field_in_a_stable_order():
    d = ok_record().to_dict()
    assert list(d)[0] == "schema_version" and d["schema_version"] == SCHEMA_VERSION == 1
    assert d["error"] is None
    rep = d["repetitions"][0]
    assert isinstance(rep["itl_ms"], list) and len(rep["itl_ms"]) == rep["n_gen_tokens"] - 1 == 7
    assert failed_record().to_dict()["error"] == {
        "type": "PromptTooLong", "message": "prompt of 31 tokens + 240 to generate does not fit in n_ctx=256",
        "phase": "measure"}


# --- (b) version check ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_from_dict_refuses_other_schema_versions(version):
    d = ok_record().to_dict()
    d["schema_version"] = version
    with pytest.raises(ValueError, match=r"unsupported run\.json schema_version .*reads 1"):
        RunRecord.from_dict(d)


def test_from_dict_refuses_a_record_without_schema_version():
    d = ok_record().to_dict()
    del d["schema_version"]
    with pytest.raises(ValueError, match="schema_version"):
        RunRecord.from_dict(d)


# --- (c) JSON Schema -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [ok_record, failed_record, plan_failed_record])
def test_synthetic_records_validate(run_validator, make):
    assert _errors(run_validator, make().to_dict()) == []


def _drop(path):
    def f(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        del d[last]
    return f


def _set(path, value):
    def f(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] = value
    return f


OK_MUTATIONS = {
    "status weird": _set(["status"], "weird"),
    "schema_version 2": _set(["schema_version"], 2),
    "negative n_gen_tokens": _set(["repetitions", 0, "n_gen_tokens"], -1),
    "fractional n_gen_tokens": _set(["repetitions", 0, "n_gen_tokens"], 7.5),
    "negative ttft_ms": _set(["repetitions", 1, "ttft_ms"], -0.5),
    "negative itl": _set(["repetitions", 0, "itl_ms", 3], -1.0),
    "ttft_ms as text": _set(["repetitions", 0, "ttft_ms"], "113.7"),
    "repetition with unknown key": _set(["repetitions", 0, "tokens_per_joule"], 1.0),
    "repetition without seed": _drop(["repetitions", 0, "seed"]),
    "repetition without itl_ms": _drop(["repetitions", 1, "itl_ms"]),
    "no provenance.model.sha256": _drop(["provenance", "model", "sha256"]),
    "short provenance.model.sha256": _set(["provenance", "model", "sha256"], "abc123"),
    "no provenance.model": _drop(["provenance", "model"]),
    "timing_path bogus": _set(["timing_path"], "cuda"),
    "provenance timing_path bogus": _set(["provenance", "timing_path"], "cuda"),
    "negative n_gpu_layers_effective": _set(["effective", "n_gpu_layers_effective"], -1),
    "no effective_id": _drop(["effective", "effective_id"]),
    "ok without repetitions": _set(["repetitions"], []),
    "ok with an error": _set(["error"], {"type": "X", "message": "m", "phase": "measure"}),
    "ok with empty provenance": _set(["provenance"], {}),
    "ok with empty effective": _set(["effective"], {}),
    "aggregate entry not a Stat": _set(["aggregates", "ttft_ms"], 113.7),
    "Stat with unknown key": _set(["aggregates", "ttft_ms", "p95"], 1.0),
    "Stat without ci95_low": _drop(["aggregates", "decode_tps", "ci95_low"]),
    "ok without an aggregated metric": _drop(["aggregates", "decode_tps"]),
    "missing top-level warnings": _drop(["warnings"]),
    "missing top-level error": _drop(["error"]),
}


@pytest.mark.parametrize("mutation", list(OK_MUTATIONS))
def test_mutated_ok_record_does_not_validate(run_validator, mutation):
    d = ok_record().to_dict()
    assert _errors(run_validator, d) == []  # so the error below comes from the mutation
    OK_MUTATIONS[mutation](d)
    assert _errors(run_validator, d), f"schema accepted a record with {mutation}"


FAILED_MUTATIONS = {
    "failed with error None": _set(["error"], None),
    "error phase bogus": _set(["error", "phase"], "teardown"),
    "error without message": _drop(["error", "message"]),
    "error with unknown key": _set(["error", "traceback"], "..."),
}


@pytest.mark.parametrize("mutation", list(FAILED_MUTATIONS))
def test_mutated_failed_record_does_not_validate(run_validator, mutation):
    d = failed_record().to_dict()
    assert _errors(run_validator, d) == []
    FAILED_MUTATIONS[mutation](d)
    assert _errors(run_validator, d), f"schema accepted a record with {mutation}"


def test_later_additions_at_top_level_and_in_provenance_are_allowed(run_validator):
    d = ok_record().to_dict()
    d["energy_audit"] = {"measure": {"gpu_util_mean": 97.5, "energy_j": 12.3}}
    d["provenance"]["native_timing"] = {"library": "libharness_timing.so"}
    d["provenance"]["model"]["quant_detail"] = "Q4_K_M mostly"
    assert _errors(run_validator, d) == []


def test_null_metrics_are_allowed_where_they_cannot_be_computed(run_validator):
    """A 1-token repetition has no decode rate and no inter-token latency."""
    rep = Repetition(metrics=rep_metrics(0, 0, [120 * MS], n_prompt_tokens=31, prompt_eval_ms=None), seed=42,
                     t_prefill_end_ms=None, engine_eval_ms=None, engine_n_eval=None, itl_ms=())
    assert rep.metrics.decode_tps is None and rep.metrics.itl_p50_ms is None
    reps = (rep,)
    rec = RunRecord(status="ok", effective=_effective(), load={"load_ms": 1.0, "reused": True},
                    repetitions=reps, aggregates=aggregate([r.metrics for r in reps], [r.itl_ms for r in reps]),
                    provenance=_provenance(), **_base())
    d = rec.to_dict()
    assert d["aggregates"]["decode_tps"] is None and d["aggregates"]["ttft_ms"]["std"] is None
    assert _errors(run_validator, d) == []


# --- (d) derived aggregates -----------------------------------------------------------------------

def test_recompute_aggregates_equals_stored_aggregates():
    rec = ok_record()
    assert rec.recompute_aggregates() == rec.aggregates
    assert set(AGGREGATED) <= set(rec.aggregates)
    assert rec.aggregates["n_gen_tokens_total"] == 16
    assert rec.aggregates["itl_pooled_ms"]["n"] == 14
    assert rec.aggregates["decode_tps"]["n"] == 2


def test_recompute_aggregates_notices_changed_raw_values():
    rec = ok_record()
    d = rec.to_dict()
    d["repetitions"][1]["decode_tps"] *= 2
    assert RunRecord.from_dict(d).recompute_aggregates() != rec.aggregates


def test_recompute_aggregates_of_a_record_without_repetitions_is_empty():
    assert failed_record().recompute_aggregates() == {}


# --- golden file ----------------------------------------------------------------------------------

def _close(a, b, path="") -> list[str]:
    """Paths where two JSON values differ beyond float rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [p for k in a for p in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9,
                                                                                         abs_tol=1e-9)
        return [] if ok else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_golden_v1_loads_validates_and_round_trips(run_validator):
    """A real run.json of schema version 1: it must stay loadable and valid as the harness evolves."""
    d = json.loads(GOLDEN_V1.read_text(encoding="utf-8"))
    assert _errors(run_validator, d) == []
    rec = RunRecord.from_dict(d)
    assert rec.status == "ok" and len(rec.repetitions) == 2
    assert rec.repetitions[0].metrics.n_gen_tokens == 8 and rec.repetitions[1].seed == 43
    assert rec.provenance["model"]["sha256"] == MODEL_SHA
    out = rec.to_dict()
    # Blocks added to version 1 later (telemetry, roofline) come back empty; the rest is unchanged.
    assert {k: v for k, v in out.items() if k not in d} == {"telemetry": {}, "roofline": {}}
    assert {k: v for k, v in out.items() if k in d} == d
    assert _close(rec.recompute_aggregates(), d["aggregates"]) == []


# --- sweep.json -----------------------------------------------------------------------------------

def test_sweep_index_validates_against_its_schema(tmp_path):
    schema = json.loads(SWEEP_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    v = Draft202012Validator(schema)
    sweep = tmp_path / "s1"
    sweepindex.mark_started(sweep, ["runtime.n_ctx=256,2048"])
    running = json.loads((sweep / "sweep.json").read_text())
    assert _errors(v, running) == [] and running["state"] == "running"
    for rec in (ok_record(), failed_record(), plan_failed_record()):
        write_json(sweep / rec.job_name / "run.json", rec.to_dict())
    sweepindex.rebuild(sweep)
    d = json.loads((sweep / "sweep.json").read_text())
    assert _errors(v, d) == []
    assert d["status_counts"] == {"ok": 1, "failed": 2, "skipped": 0} and d["n_runs"] == 3
    bad = copy.deepcopy(d)
    bad["state"] = "done"
    assert _errors(v, bad)
    bad = copy.deepcopy(d)
    del bad["status_counts"]
    assert _errors(v, bad)  # a complete index must count its runs
