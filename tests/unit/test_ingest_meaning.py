"""Tests for ingest by meaning: the canonical-column registry, the older tool's files whatever
columns they add, aggregates kept apart from samples, num_gpu as offload, other tools' formats and
large files streamed."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import columns, detect, files, stats
from harness.analysis.ingest import ingest
from harness.analysis.offload import parse_layers
from harness.analysis.pipeline import analyze

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
OLD = DATA / "oldtool"
TOOLS = DATA / "tools"


def one(res, path):
    got = [f for f in res.files if f.path == path]
    assert len(got) == 1, [f.path for f in res.files]
    return got[0]


def rows_of(res, path):
    return res.frame[res.frame["source_file"] == path].reset_index(drop=True)


def claims(res, path) -> dict:
    a = res.aggregates[res.aggregates["source_file"] == path]
    return {(r["job"], r["metric"], r["stat"]): r["value"] for r in a.to_dict("records")}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


# --- the registry ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("header,name,stat,unit", [
    ("mean_tokens_s", "decode_tps", "mean", "tok/s"),
    ("eval_s_mean", "decode_ms", "mean", "s"),
    ("Generation Time (ms)", "e2e_ms", None, "ms"),
    ("Tokens per Second", "decode_tps", None, "tok/s"),
    ("Tokens", "n_gen_tokens", None, None),
    ("average_ttft_ms", "ttft_ms", "mean", "ms"),
    ("p95_tokens_per_second", "decode_tps", "p95", "tok/s"),
    ("eval_duration", "decode_ms", None, "ns"),
    ("prompt_per_second", "prefill_tps", None, "tok/s"),
    ("predicted_ms", "decode_ms", None, "ms"),
    ("Time to First Token (ms)", "ttft_ms", None, "ms"),
    ("num_gpu", "n_gpu_layers", None, None),
    ("prompt_text", "workload", None, None),
    ("Success", "status", None, None),
    ("total_requests", "n_claimed", None, None),
    ("Tone", None, None, None),
])
def test_column_names_parse_to_meaning_and_unit(header, name, stat, unit):
    p = columns.parse(header)
    assert (p.canonical.name if p.canonical else None, p.stat, p.unit) == (name, stat, unit)


def test_durations_without_a_unit_take_it_from_their_magnitude():
    assert columns.guess_duration_unit([0.05, 0.04, 0.4]) == "s"
    assert columns.guess_duration_unit([250.0, 300.0]) == "ms"
    assert columns.guess_duration_unit([2.5e8, 3e8]) == "ns"
    assert columns.to_canonical(columns.BY_ALIAS["ttft"], 0.25, "s") == 250.0


def test_a_table_needs_a_rate_or_latency_and_a_configuration(root):
    (root / "no_config.csv").write_text("ttft_ms,tokens_s\n100,50\n")
    (root / "no_metric.csv").write_text("model,num_ctx\ngemma,2048\n")
    res = ingest([root])
    assert one(res, "no_config.csv").kind == "unrecognised"
    assert "names the configuration" in one(res, "no_config.csv").reason
    assert "no throughput or latency column" in one(res, "no_metric.csv").reason


# --- the older tool's files ------------------------------------------------------------------------------------

def test_per_call_csv_with_extra_columns(root):
    shutil.copy(OLD / "tuning_calls.csv", root)
    res = ingest([root])
    f = one(res, "tuning_calls.csv")
    assert (f.kind, f.n_rows, f.n_failed, f.n_rejected) == ("ollama-config-calls", 8, 1, 2)
    assert "columns not used: seed" in f.note
    df = rows_of(res, "tuning_calls.csv")
    r0 = df.loc[0]
    assert (r0["ttft_ms"], r0["decode_tps"], r0["load_ms"], r0["decode_ms"]) == (200.0, 50.0, 1200.0, 2000.0)
    assert r0["model"] == "gemma3:270m" and r0["offload_param"] == "num_gpu" and r0["n_gpu_layers"] == "40"
    assert r0["workload"] == "Explain photosynthesis briefly." and r0["started_at"] == "2025-03-01T10:00:00"
    assert df.loc[5, "status"] == "failed" and df.loc[5, "error"] == "model runner has unexpectedly stopped"
    assert math.isnan(df.loc[6, "decode_tps"]) and df.loc[6, "ttft_ms"] == 880.0  # 1e308 rejected, row kept
    assert math.isnan(df.loc[7, "ttft_ms"])  # negative rejected
    assert any("decode_tps above the plausible maximum" in w and "1 row" in w for w in res.warnings)


def test_quantisation_csv_joins_model_and_tag(root):
    shutil.copy(OLD / "quant_calls.csv", root)
    res = ingest([root])
    df = rows_of(res, "quant_calls.csv")
    assert list(df["model"]) == ["llama3.2:1b-instruct-q4_K_M"] * 2 + ["llama3.2:1b-instruct-q8_0"] * 2
    assert list(df["status"]) == ["ok", "ok", "ok", "failed"] and df.loc[3, "error"] == "timeout after 120s"
    assert list(df["rep"]) == [0, 1, 0, 1]


def test_summary_csv_is_aggregates_with_units_read_from_names_and_values(root):
    shutil.copy(OLD / "summary.csv", root)
    res = ingest([root])
    f = one(res, "summary.csv")
    assert (f.kind, f.n_rows, f.n_aggregates) == ("ollama-summary", 0, 15)
    assert "prompt_eval: no unit in the name, read as s" in f.note and "1 pre-aggregated rows failed" in f.note
    c = claims(res, "summary.csv")
    assert c[("ollama", "ttft_ms", "mean")] in (210.0, 200.0, 900.0)
    a = res.aggregates
    row = a[(a["n_gpu_layers"] == "8") & (a["metric"] == "prompt_eval_ms")].iloc[0]
    assert (row["value"], row["stat"], row["unit"]) == (400.0, "as stated", "ms")
    assert set(a.loc[a["metric"] == "decode_ms", "value"]) == {1500.0, 8000.0}
    assert len(res.frame) == 0


def test_application_csv_success_flags_and_text_columns(root):
    shutil.copy(OLD / "app_tests.csv", root)
    res = ingest([root])
    f = one(res, "app_tests.csv")
    assert (f.kind, f.n_rows, f.n_failed) == ("csv", 6, 2)
    assert "end-to-end rate" in f.note and "Tone" in f.note
    df = rows_of(res, "app_tests.csv")
    assert list(df["e2e_ms"][:4]) == [850.0, 900.0, 800.0, 4200.0]
    assert df.loc[0, "job"] == "greeting" and df.loc[0, "workload"] == "Context=short · Tone=formal"
    assert df.loc[2, "workload"] == "Context=short · Tone=casual" and df.loc[2, "run_id"] != df.loc[0, "run_id"]
    assert list(df["error"][4:]) == ["success flag false"] * 2


def test_agent_run_json_variants_become_aggregates(root):
    shutil.copy(OLD / "agent_run.json", root)
    res = ingest([root])
    f = one(res, "agent_run.json")
    assert (f.kind, f.n_rows, f.n_aggregates) == ("json", 0, 17)
    a = res.aggregates
    assert set(a["job"]) == {"baseline", "long_ctx"} and set(a["n_ctx"]) == {2048.0, 8192.0}
    assert set(a["top_k"]) == {40.0} and set(a["repeat_penalty"]) == {1.1} and set(a["n_claimed"]) == {20.0}
    long = a[a["job"] == "long_ctx"].set_index(["metric", "stat"])["value"]
    assert long[("ttft_ms", "p95")] == 380.0 and long[("decode_tps", "mean")] == 44.0
    assert long[("n_gen_tokens", "total")] == 2300.0
    assert not a["metric"].str.contains("gpu").any()  # null GPU fields claim nothing
    assert len(a[a["run_id"] == a["run_id"].iloc[-1]]) == 5  # run 2: its 1e308 mean rejected
    assert any(w.startswith("agent_run.json: aggregate decode_tps above") for w in res.warnings)


def test_aggregates_are_never_pooled_into_sample_statistics(root):
    for name in ("tuning_calls.csv", "summary.csv", "agent_run.json"):
        shutil.copy(OLD / name, root)
    an = analyze([root])
    ok = an.samples[an.samples["status"] == "ok"]
    assert int(an.configs["n_samples"].sum()) == len(ok) == 7
    assert int(an.configs["decode_tps_n"].sum()) == int(ok["decode_tps"].notna().sum())
    assert an.configs["decode_tps_max"].max() == 52.0  # no claimed mean or p95 among the samples
    assert len(an.ingest.aggregates) == 15 + 17


# --- num_gpu as offload ------------------------------------------------------------------------------------

def _gguf(path: Path, blocks: int) -> Path:
    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x)) + x.encode()
    kv = (s("general.architecture") + struct.pack("<I", 8) + s("gemma3")
          + s("gemma3.block_count") + struct.pack("<I", 4) + struct.pack("<I", blocks))
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 0, 2) + kv)
    return path


def test_num_gpu_at_or_above_the_layer_count_is_one_configuration(root):
    shutil.copy(OLD / "tuning_calls.csv", root)
    res = ingest([root], model_layers={"gemma3:270m": 35})
    df = res.frame
    assert dict(zip(df["n_gpu_layers"], df["n_gpu_layers_effective"])) == {"40": 35.0, "999": 35.0, "8": 8.0}
    assert res.offload == ["num_gpu 40, 999 on gemma3:270m: one configuration (all 35 offloadable layers; "
                           "layer count given)"]
    configs = stats.configurations(df)
    assert sorted(configs["requested_n_gpu_layers"].dropna().unique()) == ["40,999", "8"]
    apart = stats.configurations(ingest([root]).frame)  # layer count unknown: kept apart
    assert sorted(apart["requested_n_gpu_layers"].dropna().unique()) == ["40", "8", "999"]


def test_layer_count_from_a_local_gguf_and_from_the_option(root, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    _gguf(models / "gemma3-270m.gguf", 34)
    monkeypatch.setenv("HARNESS_MODELS", str(models))
    shutil.copy(OLD / "tuning_calls.csv", root)
    res = ingest([root])
    assert set(res.frame["n_gpu_layers_effective"]) == {35.0, 8.0}
    assert "GGUF gemma3-270m.gguf" in res.offload[0]
    assert parse_layers(["35", "gemma3:270m=19"]) == {None: 35, "gemma3:270m": 19}
    with pytest.raises(ValueError, match="--model-layers"):
        parse_layers(["x=0"])


def test_report_names_the_offload_parameter_and_shows_aggregates(root, tmp_path):
    from harness.report.pipeline import write_report

    shutil.copy(OLD / "tuning_calls.csv", root)
    shutil.copy(OLD / "summary.csv", root)
    an = analyze([root], model_layers={None: 35})
    write_report(an, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert ". Aggregates\n" in md and "decode_tps mean 51 tok/s" in md
    assert "n_gpu_layers (num_gpu)" in md and "Offload parameter: num_gpu" in md
    assert "num_gpu=999 (effective 35)" in md
    assert "Files read, with how" in md and "columns not used: seed" in md
    assert (tmp_path / "analysis" / "aggregates.csv").exists()


# --- other tools -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tools():
    return ingest([TOOLS])


def test_llama_server_timings(tools):
    assert one(tools, "llama_server_completion.json").kind == "llama-server"
    r = rows_of(tools, "llama_server_completion.json").loc[0]
    assert (r["prompt_eval_ms"], r["prefill_tps"], r["decode_ms"], r["decode_tps"]) == (45.0, 400.0, 800.0, 80.0)
    assert (r["n_gen_tokens"], r["n_ctx"], r["temperature"], r["top_k"]) == (64.0, 4096.0, 0.2, 40.0)
    assert math.isnan(r["ttft_ms"])
    f = one(tools, "llama_server_calls.jsonl")
    assert (f.n_rows, f.n_failed) == (3, 1) and "predicted_per_second" in f.note
    df = rows_of(tools, "llama_server_calls.jsonl")
    assert df.loc[2, "error"] == "the request exceeds the available context size"


def test_ollama_verbose_text(tools):
    df = rows_of(tools, "ollama_verbose.txt")
    assert len(df) == 2 and (df["source_format"] == "ollama-verbose").all()
    assert (df.loc[0, "e2e_ms"], df.loc[0, "load_ms"], df.loc[0, "decode_tps"]) == (2500.0, 12.5, 60.0)
    assert df.loc[1, "decode_ms"] == 62000.0 and df.loc[1, "load_ms"] == pytest.approx(0.5)
    assert df.loc[1, "n_gen_tokens"] == 3000.0


def test_vllm_bench_serve(tools):
    df = rows_of(tools, "vllm_serve_detailed.json")
    assert list(df["status"]) == ["ok", "ok", "failed"] and df.loc[2, "error"] == "Bad Request"
    assert (df.loc[0, "ttft_ms"], df.loc[0, "decode_tps"], df.loc[0, "e2e_ms"]) == (50.0, pytest.approx(80.0),
                                                                                   pytest.approx(100.0))
    assert (df.loc[0, "request_rate"], df.loc[0, "concurrency"]) == (4.0, 8.0)
    a = tools.aggregates[tools.aggregates["source_file"] == "vllm_serve_summary.json"]
    assert math.isinf(a["request_rate"].iloc[0]) and set(a["concurrency"]) == {16.0}
    got = {(r["metric"], r["stat"]): r["value"] for r in a.to_dict("records")}
    assert got[("ttft_ms", "p99")] == 120.5 and got[("tpot_ms", "mean")] == 6.5 and got[("e2e_ms", "median")] == 6500
    assert got[("output_throughput", "total")] == 2425.0


def test_guidellm_report(tools):
    f = one(tools, "guidellm_report.json")
    assert (f.kind, f.n_rows, f.n_failed) == ("guidellm", 3, 1)
    df = rows_of(tools, "guidellm_report.json")
    assert (df.loc[0, "decode_tps"], df.loc[0, "e2e_ms"], df.loc[0, "concurrency"]) == (80.0, 840.0, 4.0)
    assert df.loc[0, "model"] == "gemma3:270m" and df.loc[2, "error"] == "ReadTimeout"
    a = tools.aggregates[tools.aggregates["source_file"] == "guidellm_report.json"]
    assert set(a["request_rate"]) == {2.5}  # the benchmark without request lists
    got = {(r["metric"], r["stat"]): r["value"] for r in a.to_dict("records")}
    assert got[("e2e_ms", "mean")] == 1200.0 and got[("ttft_ms", "p95")] == 70.0


def test_aiperf_exports(tools):
    recs = rows_of(tools, "profile_export.jsonl")
    assert list(recs["status"]) == ["ok", "ok", "failed"]
    assert recs.loc[1, "ttft_ms"] == 250.0 and recs.loc[1, "decode_tps"] == pytest.approx(1000 / 6.0)
    assert recs.loc[2, "error"] == "Request was cancelled after 0.000 seconds"
    for name in ("profile_export_aiperf.json", "profile_export_aiperf.csv"):
        a = tools.aggregates[tools.aggregates["source_file"] == name]
        got = {(r["metric"], r["stat"]): r["value"] for r in a.to_dict("records")}
        assert got[("ttft_ms", "p95")] == pytest.approx(4051.43) and got[("e2e_ms", "mean")] == 6550.36
        assert got[("request_throughput", "total")] == 13.16 and set(a["n_claimed"]) == {200.0}
    assert "3 failed requests" in one(tools, "profile_export_aiperf.json").note
    old = claims(tools, "profile_export_aiperf_records.json")  # an older export: statistics under "records"
    assert old[("aiperf", "ttft_ms", "p99")] == 90.1 and old[("aiperf", "request_throughput", "total")] == 8.2
    assert set(tools.aggregates.loc[tools.aggregates["source_file"] == "profile_export_aiperf.json",
                                    "concurrency"]) == {100.0}


def test_optimum_benchmark_report(tools):
    df = rows_of(tools, "benchmark_report.json")
    assert list(df["prompt_eval_ms"]) == [50.0, 40.0, 60.0] and list(df["decode_ms"]) == [1000.0, 1100.0, 900.0]
    assert df.loc[0, "load_ms"] == 2500.0 and math.isnan(df.loc[1, "load_ms"])
    got = claims(tools, "benchmark_report.json")
    assert got[("optimum-benchmark", "itl_ms", "p99")] == pytest.approx(17.0)
    assert got[("optimum-benchmark", "decode_tps", "mean")] == 63.0


# --- large and hostile inputs ----------------------------------------------------------------------------------

CALLS = "timestamp,model,num_gpu,ttft_s,tokens_s,error\n"


def test_large_csv_and_jsonl_stream_with_the_same_result(root, monkeypatch):
    lines = [f"2025-01-01T00:00:{i % 60:02d},m,{99 if i % 2 else 8},0.{i % 9 + 1},{40 + i % 7},"
             + ("boom" if i % 50 == 0 else "") for i in range(3000)]
    (root / "calls.csv").write_text(CALLS + "\n".join(lines) + "\n")
    with open(root / "calls.jsonl", "w") as f:
        for i in range(3000):
            f.write(json.dumps({"model": "m", "num_gpu": 8, "ttft_ms": 100 + i % 5, "tokens_per_second": 50}) + "\n")
    whole = ingest([root])
    monkeypatch.setattr(files, "MAX_DOCUMENT_BYTES", 4096)  # both files are now read as streams
    monkeypatch.setattr(detect.files, "HEAD_BYTES", 1024)
    streamed = ingest([root])
    for name in ("calls.csv", "calls.jsonl"):
        a, b = one(whole, name), one(streamed, name)
        assert (a.kind, a.n_rows, a.n_failed) == (b.kind, b.n_rows, b.n_failed)
    assert (one(streamed, "calls.csv").n_rows, one(streamed, "calls.csv").n_failed) == (3000, 60)
    pd.testing.assert_frame_equal(whole.frame, streamed.frame)


def test_whole_json_document_over_the_cap_is_refused_with_the_reason(root, monkeypatch):
    (root / "big.json").write_text(json.dumps({"benchmarks": [{"x": "y" * 5000}]}))
    monkeypatch.setattr(files, "MAX_DOCUMENT_BYTES", 4096)
    f = one(ingest([root]), "big.json")
    assert f.kind == "skipped" and "the cap for JSON parsed whole" in f.reason


def test_hostile_values_are_rejected_per_row_with_reasons(root):
    (root / "h.csv").write_text("model,tokens_s,ttft_ms\nm,nan,100\nm,inf,100\nm,-5,100\nm,1e308,-1\nm,abc,\n")
    res = ingest([root])
    df = rows_of(res, "h.csv")
    f = one(res, "h.csv")
    assert (f.n_rows, f.n_rejected) == (5, 3)
    assert df["decode_tps"].isna().all() and list(df["status"]) == ["ok", "ok", "ok", "failed", "failed"]
    reasons = " | ".join(res.warnings)
    assert "not finite in 1 row" in reasons and "negative in 1 row" in reasons and "plausible maximum" in reasons


def test_our_exports_are_read_back_by_ingest(root, tmp_path):
    from harness.export import export

    src = ingest([DATA / "runs", DATA / "foreign" / "ollama_config_calls.csv"]).frame
    for fmt, name in (("csv", "x.csv"), ("parquet", "x.parquet"), ("pytest-benchmark", "pb.json")):
        data = export(src, fmt)
        (root / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    res = ingest([root])
    got = {f.path: (f.kind, f.n_rows, f.n_failed) for f in res.files}
    n, n_failed = len(src), int((src["status"] == "failed").sum())
    assert got == {"x.csv": ("harness-csv", n, n_failed), "x.parquet": ("harness-parquet", n, n_failed),
                   "pb.json": ("pytest-benchmark", n, n_failed)}
    back = rows_of(res, "x.csv")
    assert sorted(back["decode_tps"].dropna()) == sorted(src["decode_tps"].dropna())


def test_a_streamed_csv_that_stops_being_utf8_is_skipped_with_the_reason(root, monkeypatch):
    (root / "calls.csv").write_bytes((CALLS + "x,m,8,0.1,40,\n" * 300).encode() + b"x,m,8,0.1,\xff\xfe,\n")
    monkeypatch.setattr(files, "MAX_DOCUMENT_BYTES", 1024)
    monkeypatch.setattr(detect.files, "HEAD_BYTES", 512)
    res = ingest([root])
    f = one(res, "calls.csv")
    assert f.kind == "skipped" and f.reason.startswith("not UTF-8") and len(res.frame) == 0


def test_layer_count_from_an_ollama_manifest(root, tmp_path, monkeypatch):
    store = tmp_path / "ollama"
    blob = _gguf(tmp_path / "blob", 18)
    digest = "sha256:" + "ab" * 32
    (store / "blobs").mkdir(parents=True)
    shutil.copy(blob, store / "blobs" / digest.replace(":", "-"))
    man = store / "manifests" / "registry.ollama.ai" / "library" / "gemma3" / "270m"
    man.parent.mkdir(parents=True)
    man.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    monkeypatch.setenv("HARNESS_MODELS", str(tmp_path / "none"))
    (root / "calls.csv").write_text("model,num_gpu,tokens_s\ngemma3:270m,19,50\ngemma3:270m,999,51\n"
                                    "gemma3:270m,12,30\nother,999,10\n")
    res = ingest([root])
    eff = dict(zip(res.frame["n_gpu_layers"] + res.frame["model"], res.frame["n_gpu_layers_effective"]))
    assert eff["19gemma3:270m"] == eff["999gemma3:270m"] == 19.0 and eff["12gemma3:270m"] == 12.0
    assert math.isnan(eff["999other"])  # no GGUF of it: its offload stays as requested
    assert res.offload == ["num_gpu 19, 999 on gemma3:270m: one configuration (all 19 offloadable layers; "
                           "layer count GGUF sha256-" + "ab" * 32 + ")"]


def test_analyze_command_with_model_layers(root, tmp_path, capsys):
    from harness.analysis_cli import cmd_analyze

    for name in ("tuning_calls.csv", "summary.csv"):
        shutil.copy(OLD / name, root)
    out = tmp_path / "an"
    assert cmd_analyze([str(root), "--out", str(out), "--model-layers", "gemma3:270m=35"]) == 0
    err = capsys.readouterr().err
    assert "offload: num_gpu 40, 999 on gemma3:270m: one configuration" in err and "aggregates" in err
    agg = pd.read_csv(out / "aggregates.csv")
    assert len(agg) == 15 and set(agg["source_format"]) == {"ollama-summary"}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and "ollama-summary" not in set(runs["source_format"])
    assert cmd_analyze([str(root), "--out", str(out), "--model-layers", "many"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--model-layers" in lines[0]


def test_an_ambiguous_ollama_name_with_whole_numbers_is_a_token_count(root):
    (root / "s.csv").write_text("num_gpu,mean_tokens_s,prompt_eval,eval\n40,51.0,26,0.5\n999,50.0,26,0.4\n")
    res = ingest([root])
    f = one(res, "s.csv")
    assert "prompt_eval: no unit and whole numbers, read as a token count" in f.note
    assert "eval: no unit in the name, read as s" in f.note
    a = res.aggregates
    assert set(a["n_prompt_tokens"]) == {26.0} and set(a.loc[a["metric"] == "decode_ms", "value"]) == {500.0, 400.0}


def test_a_variants_own_configuration_overrides_the_runs(root):
    (root / "nest.json").write_text(json.dumps({
        "model": "m", "configuration": {"num_ctx": 1024, "num_gpu": 10},
        "variants": [{"name": "a", "configuration": {"num_ctx": 4096},
                      "metrics": {"aggregate_metrics": {"average_tokens_per_second": 10}}},
                     {"name": "b", "metrics": {"aggregate_metrics": {"average_tokens_per_second": 20}}}]}))
    a = ingest([root]).aggregates.set_index("job")
    assert (a.loc["a", "n_ctx"], a.loc["b", "n_ctx"]) == (4096.0, 1024.0)
    assert a.loc["a", "n_gpu_layers"] == a.loc["b", "n_gpu_layers"] == "10" and a.loc["a", "model"] == "m"


def test_per_call_json_records_with_nested_options_group_by_configuration(root):
    calls = [{"model": "m", "ttft_s": 0.2, "tokens_s": 50, "options": {"num_gpu": 40}, "error": None},
             {"model": "m", "ttft_s": 0.3, "tokens_s": 51, "options": {"num_gpu": 40}, "error": None},
             {"model": "m", "ttft_s": 0.3, "tokens_s": 0, "options": {"num_gpu": 8}, "error": "out of memory"}]
    (root / "calls.json").write_text(json.dumps(calls))
    df = ingest([root]).frame
    assert list(df["n_gpu_layers"]) == ["40", "40", "8"] and list(df["rep"]) == [0, 1, 0]
    assert df.loc[0, "run_id"] == df.loc[1, "run_id"] != df.loc[2, "run_id"]
    assert list(df["ttft_ms"][:2]) == [200.0, 300.0] and df.loc[2, "error"] == "out of memory"
