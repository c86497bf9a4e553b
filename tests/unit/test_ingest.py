"""Tests for harness.analysis.ingest: formats by content, junk as failures, safe walking."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import types
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import detect
from harness.analysis import ingest as ingest_mod
from harness.analysis import table
from harness.analysis.ingest import FileReport, IngestResult, ingest

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
FOREIGN = DATA / "foreign"
JUNK = DATA / "junk"
RUNS = DATA / "runs"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def put(root: Path, src: Path, name: str | None = None) -> Path:
    dst = root / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def one(result: IngestResult, path: str) -> FileReport:
    found = [f for f in result.files if f.path == path]
    assert len(found) == 1, [f.path for f in result.files]
    return found[0]


def rows_of(result: IngestResult, path: str):
    return result.frame[result.frame["source_file"] == path].reset_index(drop=True)


def nan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


# --- our runs --------------------------------------------------------------------------------------------

def test_our_runs_ok_and_failed(root):
    shutil.copytree(RUNS, root / "runs")
    res = ingest([root])
    ok = rows_of(res, "runs/s1/ok_job/run.json")
    assert list(ok["status"]) == ["ok", "ok"]
    assert list(ok["rep"]) == [0, 1]
    assert ok.loc[0, "ttft_ms"] == pytest.approx(113.678111)
    assert ok.loc[1, "decode_tps"] == pytest.approx(52.785915040783195)
    assert ok.loc[0, "load_ms"] == pytest.approx(822.077735)
    assert ok.loc[0, "n_gpu_layers"] == "all" and ok.loc[0, "n_ctx"] == 2048
    assert ok.loc[0, "hardware"] == "AMD EPYC" and ok.loc[0, "source_format"] == "harness"
    assert ok.loc[0, "run_id"] == "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a" and ok.loc[0, "sweep"] == "s1"
    failed = rows_of(res, "runs/s1/failed_job/run.json")
    assert len(failed) == 1
    assert failed.loc[0, "status"] == "failed"
    assert failed.loc[0, "error"] == "llama_model_load: failed to load model"
    assert all(nan(failed.loc[0, m]) for m in table.METRICS)
    assert one(res, "runs/s1/failed_job/run.json").n_failed == 1
    assert res.ok


def test_failed_run_keeps_no_metric_even_when_record_has_run_level_values(root):
    rec = json.loads((RUNS / "s1" / "failed_job" / "run.json").read_text())
    rec["load"] = {"load_ms": 900.0, "reused": False}
    (root / "run.json").write_text(json.dumps(rec))
    row = ingest([root]).frame.iloc[0]
    assert row["status"] == "failed" and nan(row["load_ms"])


def test_newer_schema_version_is_skipped_with_reason(root):
    put(root, JUNK / "run_v2.json", "s/j/run.json")
    res = ingest([root])
    f = one(res, "s/j/run.json")
    assert f.kind == "skipped"
    assert f.reason == "schema_version 2 is newer than this harness reads (1)"
    assert len(res.frame) == 0 and not res.ok


def test_the_narrative_agents_own_run_is_not_sweep_data(root):
    # A report written to a folder of any name inside the sweep (--out S/llm) holds the agent's
    # run.json: a later analysis of S must not count it as a configuration of the sweep.
    put(root, RUNS / "s1" / "ok_job" / "run.json", "s1/ok_job/run.json")
    rec = json.loads((RUNS / "s1" / "ok_job" / "run.json").read_text())
    rec["config"]["agent"] = {"max_tokens": 600}
    (root / "s1" / "llm" / "agent").mkdir(parents=True)
    (root / "s1" / "llm" / "agent" / "run.json").write_text(json.dumps(rec))
    res = ingest([root])
    f = one(res, "s1/llm/agent/run.json")
    assert f.kind == "skipped" and f.reason == "the narrative agent's own run, not sweep data"
    assert set(res.frame["source_file"]) == {"s1/ok_job/run.json"}


def test_derived_and_temporary_files_are_listed_not_read(root):
    job = root / "s1" / "ok_job"
    put(root, RUNS / "s1" / "ok_job" / "run.json", "s1/ok_job/run.json")
    # runs.csv holds the same runs again: reading it would double-count them
    (root / "s1" / "runs.csv").write_text("prompt,ttft_s,tokens_s,load_s,prompt_eval_s,eval_s,eval_count,"
                                          "response_chars,error\nx,1,2,3,4,5,6,7,\n")
    for name in ("sweep.json", "multirun.yaml", "runs.parquet"):
        (root / "s1" / name).write_text("{}")
    for name in ("tokens.csv", "telemetry.csv", "engine_load.log", "run.log"):
        (job / name).write_text("t_ns\n1\n")
    (job / ".hydra").mkdir()
    (job / ".hydra" / "config.yaml").write_text("a: 1\n")
    shutil.copyfile(RUNS / "s1" / "ok_job" / "run.json", job / ".tmp-run.json-abc")
    res = ingest([root])
    derived = {f.path for f in res.files if f.reason == "derived harness file"}
    assert derived == {"s1/runs.csv", "s1/sweep.json", "s1/multirun.yaml", "s1/runs.parquet",
                       "s1/ok_job/tokens.csv", "s1/ok_job/telemetry.csv", "s1/ok_job/engine_load.log",
                       "s1/ok_job/run.log", "s1/ok_job/.hydra"}
    assert all(f.kind == "skipped" for f in res.files if f.reason == "derived harness file")
    assert one(res, "s1/ok_job/.tmp-run.json-abc").kind == "skipped"
    assert len(res.frame) == 2 and set(res.frame["source_file"]) == {"s1/ok_job/run.json"}


def test_bad_record_content_does_not_stop_the_ingest(root):
    (root / "a").mkdir()
    (root / "a" / "run.json").write_text(json.dumps({"schema_version": 1, "run_id": "x", "status": "ok",
                                                     "config": "not a mapping"}))
    put(root, FOREIGN / "ollama_summary.csv", "b/summary.csv")
    res = ingest([root])
    bad = one(res, "a/run.json")
    assert bad.kind == "skipped" and bad.reason.startswith("could not read: AttributeError")
    assert one(res, "b/summary.csv").n_aggregates == 3  # pre-aggregated: claims, not samples


# --- foreign formats -------------------------------------------------------------------------------------

def test_ollama_calls(root):
    put(root, FOREIGN / "ollama_calls.csv")
    res = ingest([root])
    f = one(res, "ollama_calls.csv")
    assert (f.kind, f.n_rows, f.n_failed, f.reason) == ("ollama-calls", 4, 2, None)
    df = rows_of(res, "ollama_calls.csv")
    r0 = df.loc[0]
    assert (r0["ttft_ms"], r0["decode_tps"], r0["load_ms"]) == (250.0, 42.5, 1500.0)
    assert (r0["prompt_eval_ms"], r0["decode_ms"], r0["n_gen_tokens"]) == (125.0, 2000.0, 85.0)
    assert r0["job"] == "ollama" and r0["engine"] == "ollama" and nan(r0["hardware"])
    assert len(r0["workload"]) == 80 and r0["workload"].startswith("Why is the sky blue? Answer in one short")
    assert list(df["status"]) == ["ok", "ok", "failed", "failed"]
    assert list(df["error"][2:]) == ["connection refused", "all metrics zero"]
    for i in (2, 3):
        assert all(nan(df.loc[i, m]) for m in table.METRICS)
    # the three "hello" calls are one config point: one synthetic run_id, reps 0..2
    assert df.loc[1, "run_id"] == df.loc[2, "run_id"] == df.loc[3, "run_id"] != df.loc[0, "run_id"]
    assert list(df["rep"][1:]) == [0, 1, 2]
    # failures are counted, never averaged as 0
    assert df["decode_tps"].mean() == pytest.approx((42.5 + 40.0) / 2)


def test_ollama_config_calls(root):
    put(root, FOREIGN / "ollama_config_calls.csv")
    df = ingest([root]).frame
    assert list(df["job"]) == ["full_gpu", "full_gpu", "cpu_only"]
    assert list(df["n_gpu_layers"][:2]) == ["999", "999"] and df.loc[2, "n_gpu_layers"] == "0"
    assert list(df["n_ctx"]) == [2048.0] * 3 and list(df["temperature"]) == [0.7] * 3
    assert (df.loc[0, "ttft_ms"], df.loc[0, "decode_tps"], df.loc[0, "decode_ms"]) == (100.0, 55.0, 1600.0)
    assert df.loc[1, "load_ms"] == 0.0 and df.loc[1, "rep"] == 1
    assert df.loc[0, "run_id"] == df.loc[1, "run_id"] != df.loc[2, "run_id"]
    assert (df.loc[2, "status"], df.loc[2, "error"]) == ("failed", "timeout after 60s")
    assert (df["source_format"] == "ollama-config-calls").all()


def test_ollama_summary_is_aggregates_not_samples(root):
    put(root, FOREIGN / "ollama_summary.csv")
    res = ingest([root])
    assert len(res.frame) == 0  # never samples
    agg = res.aggregates
    got = {(r["metric"], r["stat"]): r["value"] for r in agg.to_dict("records")}
    assert got == {("decode_tps", "mean"): 50.0, ("ttft_ms", "mean"): 150.0, ("load_ms", "mean"): 1000.0}
    assert set(agg["job"]) == {"full_gpu"} and set(agg["n_gpu_layers"]) == {"999"}
    f = one(res, "ollama_summary.csv")
    assert (f.kind, f.n_rows, f.n_aggregates) == ("ollama-summary", 0, 3)
    assert "pre-aggregated" in f.note and "1 pre-aggregated rows failed" in f.note


def test_ollama_api_json(root):
    put(root, FOREIGN / "ollama_api.json")
    res = ingest([root])
    r = res.frame.iloc[0]
    assert one(res, "ollama_api.json").kind == "ollama-api" and len(res.frame) == 1
    assert r["decode_tps"] == pytest.approx(50.0)  # 100 tokens / 2e9 ns
    assert r["load_ms"] == 500.0 and r["prompt_eval_ms"] == 250.0 and r["decode_ms"] == 2000.0
    assert r["e2e_ms"] == pytest.approx(3000.0)  # 3.5e9 ns total minus the 500 ms load
    assert r["prefill_tps"] == pytest.approx(80.0)  # 20 tokens / 0.25 s
    assert (r["n_prompt_tokens"], r["n_gen_tokens"]) == (20.0, 100.0)
    assert r["model"] == "gemma3:270m" and r["started_at"] == "2026-01-02T03:04:05.000000Z"
    assert r["status"] == "ok" and nan(r["ttft_ms"])  # not in the API: never invented


def test_ollama_api_jsonl_skips_stream_chunks_and_fails_errors(root):
    put(root, FOREIGN / "ollama_api.jsonl")
    res = ingest([root])
    f = one(res, "ollama_api.jsonl")
    assert (f.kind, f.n_rows, f.n_failed) == ("ollama-api", 2, 1)
    assert "1 streamed partial" in f.note
    df = res.frame
    assert df.loc[0, "decode_tps"] == pytest.approx(50.0)  # 40 / 0.8 s
    assert df.loc[0, "e2e_ms"] == pytest.approx(1000.0) and df.loc[0, "prefill_tps"] == pytest.approx(100.0)
    assert (df.loc[1, "status"], df.loc[1, "error"]) == ("failed", "model 'nope' not found")
    assert nan(df.loc[1, "decode_tps"])


def test_pytest_benchmark(root):
    put(root, FOREIGN / "pytest_benchmark.json", "bench/0001_run.json")
    res = ingest([root])
    f = one(res, "bench/0001_run.json")
    assert (f.kind, f.n_rows, f.n_failed, f.n_aggregates) == ("pytest-benchmark", 3, 0, 5)
    df = res.frame
    dec = df[df["job"] == "test_decode[512]"]
    assert list(dec["e2e_ms"]) == pytest.approx([100.0, 200.0, 300.0])
    assert list(dec["rep"]) == [0, 1, 2]
    assert (dec["decode_tps"] == 50.0).all() and (dec["n_ctx"] == 512.0).all()
    assert (dec["n_gpu_layers"] == "99").all() and (dec["model"] == "gemma3_270m").all()
    assert dec.iloc[0]["hardware"] == "AMD EPYC 7763 @ bench-host"
    assert dec.iloc[0]["started_at"] == "2026-01-02T03:00:00.000000+00:00"
    assert (df["job"] == "test_load").sum() == 0  # its mean is an aggregate, not a sample
    load = res.aggregates[res.aggregates["job"] == "test_load"].iloc[0]
    assert (load["metric"], load["stat"], load["value"]) == ("e2e_ms", "mean", pytest.approx(500.0))
    assert "aggregates" in f.note


def test_content_decides_not_the_extension(root):
    put(root, FOREIGN / "ollama_config_calls.csv", "calls.txt")
    put(root, FOREIGN / "ollama_api.json", "response")
    res = ingest([root])
    assert one(res, "calls.txt").kind == "ollama-config-calls"
    assert one(res, "response").kind == "ollama-api"


def test_frame_has_every_column_with_declared_dtypes(root):
    put(root, FOREIGN / "ollama_calls.csv")
    df = ingest([root]).frame
    assert list(df.columns) == list(table.NAMES)
    assert str(df["decode_tps"].dtype) == "float64" and str(df["rep"].dtype) == "Int64"


# --- llama-bench dispatch ---------------------------------------------------------------------------------

def test_llama_bench_files_go_to_the_llamabench_reader(root, monkeypatch):
    calls = []
    fake = types.ModuleType("harness.analysis.formats.llamabench")
    fake.sniff = lambda text: "llama-bench-csv" if text.startswith("build_commit,") else None
    fake.rows = lambda text, fmt, source_file: calls.append((fmt, source_file)) or [
        table.empty_row() | {"source_format": fmt, "source_file": source_file, "decode_tps": 123.0},
        table.empty_row() | {"source_format": fmt, "source_file": source_file, "decode_tps": 0.0}]
    monkeypatch.setattr(detect, "llamabench", fake)
    (root / "lb.csv").write_text("build_commit,n_prompt,n_gen,avg_ts\nabc,512,0,123.0\n")
    res = ingest([root])
    assert calls == [("llama-bench-csv", "lb.csv")]
    assert list(res.frame["status"]) == ["ok", "failed"]  # the all-zero row is a failure, not data
    assert res.frame.loc[0, "decode_tps"] == 123.0 and nan(res.frame.loc[1, "decode_tps"])
    assert one(res, "lb.csv").kind == "llama-bench-csv"


def test_real_llamabench_reader_reads_json(root):
    pytest.importorskip("harness.analysis.formats.llamabench")
    test = {"build_commit": "abc1234", "build_number": 1, "cpu_info": "AMD EPYC", "gpu_info": "",
            "backends": "CPU", "model_filename": "m.gguf", "model_type": "gemma3 270M Q4_K - Medium",
            "model_size": 253113024, "model_n_params": 268098176, "n_batch": 2048, "n_ubatch": 512,
            "n_threads": 2, "cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "type_k": "f16",
            "type_v": "f16", "n_gpu_layers": 99, "split_mode": "layer", "main_gpu": 0, "no_kv_offload": False,
            "flash_attn": False, "tensor_split": "0.00", "use_mmap": True, "embeddings": False,
            "n_prompt": 0, "n_gen": 32, "n_depth": 0, "test_time": "2026-01-02T03:04:05Z",
            "avg_ns": 640000000, "stddev_ns": 0, "avg_ts": 50.0, "stddev_ts": 0.0,
            "samples_ns": [640000000], "samples_ts": [50.0]}
    (root / "lb.json").write_text(json.dumps([test], indent=2))
    res = ingest([root])
    assert one(res, "lb.json").kind == "llama-bench-json"
    assert res.ok and len(res.frame) >= 1


# --- junk --------------------------------------------------------------------------------------------------

JUNK_REASONS = {
    "utf16.csv": "not UTF-8 (UTF-16 BOM)",
    "truncated.json": "truncated JSON (ends inside a value at char 51)",
    "header_only.csv": "ollama-config-calls: no data rows",
    "empty.csv": "empty file",
    "csv_in.json": "extension .json but not JSON",
    "run_v2.json": "schema_version 2 is newer than this harness reads (1)",
    "deep.json": "JSON nested deeper than 64 levels",
    "binary.dat": "binary file",
    "latin1.csv": "not UTF-8 (invalid byte at offset 3)",
    "json_in.csv": "extension .csv but not CSV",
}


@pytest.fixture
def junk_root(root) -> Path:
    for p in JUNK.iterdir():
        put(root, p)
    (root / "utf16.csv").write_bytes("prompt,ttft_s\n".encode("utf-16"))
    (root / "binary.dat").write_bytes(b"PAR1\x00\x01\x02\x03" * 8)
    (root / "latin1.csv").write_bytes(b"caf\xe9,1\n")
    (root / "json_in.csv").write_text('{"a": 1}')
    return root


def test_junk_files_are_skipped_with_reasons(junk_root):
    res = ingest([junk_root])
    s = res.summary()
    got = {d["path"]: d["reason"] for d in s["skipped_files"]}
    assert got == JUNK_REASONS
    assert s["skipped"] == len(JUNK_REASONS)
    assert s["unrecognised_files"] == [
        {"path": "unknown_header.csv", "reason": "CSV with unknown header (no throughput or latency column): a,b,c"}]


def test_csv_whose_rows_all_carry_errors_counts_failures_only(junk_root):
    res = ingest([junk_root])
    f = one(res, "all_errors.csv")
    assert (f.kind, f.n_rows, f.n_failed) == ("ollama-calls", 2, 2)
    assert f.reason == "all 2 rows failed (no usable samples)"
    df = rows_of(res, "all_errors.csv")
    assert list(df["error"]) == ["HTTP 500: model runner crashed", "connection refused"]
    assert df["ttft_ms"].isna().all() and df["decode_tps"].isna().all()
    s = res.summary()
    assert s["failed_rows"] == 2 and s["ok_rows"] == 0
    assert s["without_ok_samples"][0]["path"] == "all_errors.csv"
    assert not res.ok  # nothing usable in the junk folder


def test_nothing_usable(tmp_path, root):
    assert not ingest([]).ok and len(ingest([]).frame) == 0
    res = ingest([tmp_path / "does-not-exist", root])
    assert not res.ok
    assert one(res, "does-not-exist").reason == "not found"
    assert list(res.frame.columns) == list(table.NAMES)


def test_json_of_unknown_shape_is_unrecognised(root):
    (root / "x.json").write_text('{"hello": [1, 2, 3]}')
    (root / "notes.txt").write_text("just some words\n")
    res = ingest([root])
    assert (one(res, "x.json").kind, one(res, "x.json").reason) == ("unrecognised", "JSON of no known format")
    assert one(res, "notes.txt").kind == "unrecognised"
    assert res.summary()["unrecognised"] == 2


# --- walking safely ---------------------------------------------------------------------------------------

@pytest.fixture
def opened(monkeypatch):
    """Paths ingest opens (it reads files only through os.open)."""
    seen: list[str] = []
    real = os.open

    def spy(path, *a, **kw):
        seen.append(os.path.abspath(os.fspath(path)))
        return real(path, *a, **kw)

    monkeypatch.setattr(ingest_mod.os, "open", spy)
    return seen


def test_symlinks_are_not_followed_and_nothing_outside_is_read(tmp_path, root, opened):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = put(outside, FOREIGN / "ollama_calls.csv", "secret.csv")
    put(outside, FOREIGN / "ollama_summary.csv", "sub/summary.csv")
    put(root, FOREIGN / "ollama_api.json")
    (root / "link_to_file.csv").symlink_to(secret)
    (root / "link_to_dir").symlink_to(outside, target_is_directory=True)
    (root / "d").mkdir()
    (root / "d" / "loop").symlink_to("..", target_is_directory=True)
    (root / "self").symlink_to("self")  # a link to itself
    res = ingest([root])
    for p in ("link_to_file.csv", "link_to_dir", "d/loop", "self"):
        assert (one(res, p).kind, one(res, p).reason) == ("skipped", "symlink not followed")
    assert set(res.frame["source_file"]) == {"ollama_api.json"}
    assert opened and all(Path(p).is_relative_to(root) for p in opened)
    assert not any(Path(p).is_relative_to(outside) for p in opened)


def test_symlink_given_as_root_is_not_followed(tmp_path, root):
    put(root, FOREIGN / "ollama_api.json")
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    res = ingest([link])
    assert [(f.path, f.reason) for f in res.files] == [("link", "symlink not followed")]
    assert len(res.frame) == 0


def test_file_over_the_limit_is_skipped_unread(root, opened):
    big = root / "big.json"
    with open(big, "wb") as f:
        f.truncate(4096 + 1)  # sparse: no data blocks
    small = put(root, FOREIGN / "ollama_api.json")
    assert small.stat().st_size <= 4096
    res = ingest([root], max_file_bytes=4096)
    f = one(res, "big.json")
    assert f.kind == "skipped" and f.reason == "larger than max_file_bytes (4097 > 4096 bytes)"
    assert str(big) not in opened and str(small) in opened
    assert one(res, "ollama_api.json").kind == "ollama-api"


def test_file_root_is_read_as_is_and_read_once(root):
    p = put(root, FOREIGN / "ollama_summary.csv", "x/summary.csv")
    res = ingest([p, root])
    assert [f.path for f in res.files] == ["summary.csv", "x/summary.csv"]
    assert res.files[1].reason == "already read under another root"
    assert res.files[0].n_aggregates == 3 and len(res.aggregates) == 3


def test_unreadable_folder_is_skipped(root, monkeypatch):
    locked = root / "locked"
    put(root, FOREIGN / "ollama_api.json", "locked/inside.json")
    put(root, FOREIGN / "ollama_api.json")
    real = os.scandir

    def scandir(path):  # as a non-root user meets a folder without read permission
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(ingest_mod.os, "scandir", scandir)
    res = ingest([root])
    assert (one(res, "locked").kind, one(res, "locked").reason) == ("skipped", "permission denied")
    assert set(res.frame["source_file"]) == {"ollama_api.json"} and res.ok


def test_deep_nesting_rejected_before_parsing(root, monkeypatch):
    (root / "deep.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    (root / "ok_depth.json").write_text(json.dumps({"s": '\\"' + "[" * 100, "t": "{" * 100 + "\\"}))
    res = ingest([root])
    assert one(res, "deep.json").reason == "JSON nested deeper than 64 levels"
    # brackets inside strings are text, not nesting
    assert one(res, "ok_depth.json").kind == "unrecognised"


# --- summary -----------------------------------------------------------------------------------------------

def test_summary_counts_and_latest_mtime(root):
    shutil.copytree(RUNS, root / "runs")
    for p in FOREIGN.iterdir():
        put(root, p, f"foreign/{p.name}")
    put(root, JUNK / "empty.csv")
    stamps = {}
    for i, p in enumerate(sorted(root.rglob("*"))):
        if p.is_file():
            t = 1_700_000_000 + 60 * i
            os.utime(p, (t, t))
            stamps[p] = t
    newest = root / "foreign" / "ollama_summary.csv"
    os.utime(newest, (1_800_000_000, 1_800_000_000))
    os.utime(root / "empty.csv", (1_700_000_000, 1_700_000_000))
    res = ingest([root])
    s = res.summary()
    assert s["latest_mtime"] == datetime.fromtimestamp(1_800_000_000, timezone.utc).isoformat()
    assert one(res, "foreign/ollama_summary.csv").mtime == s["latest_mtime"]
    assert s["by_kind"] == {"harness": 2, "ollama-api": 2, "ollama-calls": 1, "ollama-config-calls": 1,
                            "ollama-summary": 1, "pytest-benchmark": 1}
    assert (s["recognised"], s["skipped"], s["unrecognised"], s["n_files"]) == (8, 1, 0, 9)
    assert s["rows"] == 2 + 1 + 1 + 2 + 4 + 3 + 3  # the summary's rows and one benchmark are aggregates
    assert s["failed_rows"] == 1 + 1 + 2 + 1  # run, jsonl error, two call rows, config call
    assert s["aggregates"] == 3 + 5 and s["files_with_aggregates"] == 2
    assert s["ok_rows"] == s["rows"] - s["failed_rows"] == int((res.frame["status"] == "ok").sum())
    assert res.ok


def test_summary_of_nothing():
    s = ingest([]).summary()
    assert (s["rows"], s["failed_rows"], s["n_files"], s["latest_mtime"]) == (0, 0, 0, None)


# --- implausible values ---------------------------------------------------------------------------------

ABSURD_CSV = """num_gpu,num_ctx,temperature,config_name,ttft_s,tokens_s,load_s,prompt_eval_s,eval_s,eval_count,error
999,2048,0.7,a,0.1,1e308,2.0,0.05,1.6,88,
999,2048,0.7,a,-0.2,45.0,0.5,0.05,2.0,90,
999,2048,0.7,a,0.1,inf,2.0,0.05,1.6,88,
999,2048,0.7,a,0.1,50.0,2.0,0.05,1.6,88,
999,2048,0.7,b,-1,1e308,-2,-0.05,-1.6,-88,
"""


def test_implausible_values_are_dropped_with_a_warning(root):
    (root / "calls.csv").write_text(ABSURD_CSV)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning (or any other) may escape
        res = ingest([root])
        df = res.frame
    rows = rows_of(res, "calls.csv")
    assert list(rows["status"]) == ["ok", "ok", "ok", "ok", "failed"]
    assert nan(rows.loc[0, "decode_tps"]) and rows.loc[0, "ttft_ms"] == pytest.approx(100.0)
    assert nan(rows.loc[1, "ttft_ms"]) and rows.loc[1, "decode_tps"] == 45.0
    assert nan(rows.loc[2, "decode_tps"])
    assert rows.loc[3, "decode_tps"] == 50.0
    assert "no plausible metric value" in rows.loc[4, "error"] and "decode_tps above" in rows.loc[4, "error"]
    assert df["decode_tps"].max() == 50.0  # nothing absurd reaches the table
    w = res.warnings
    assert any(x.startswith("calls.csv: decode_tps above the plausible maximum of 1e+07 tok/s in 2 rows")
               for x in w), w
    assert any("decode_tps not finite in 1 row" in x for x in w), w
    assert any("ttft_ms negative in 2 rows" in x for x in w), w
    assert res.summary()["warnings"] == w


def test_implausible_llama_bench_samples_are_dropped(root):
    test = {"build_commit": "abc1234", "cpu_info": "EPYC", "gpu_info": "", "model_filename": "m.gguf",
            "n_prompt": 0, "n_gen": 32, "avg_ns": 640000000, "avg_ts": 50.0,
            "samples_ns": [640000000, 640000000], "samples_ts": [50.0, 1e308]}
    (root / "lb.json").write_text(json.dumps([test]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ingest([root])
    assert list(res.frame["decode_tps"].isna()) == [False, True]
    assert len(res.warnings) == 1 and res.warnings[0].startswith("lb.json: decode_tps above")


def test_clean_files_give_no_warnings(root):
    put(root, FOREIGN / "ollama_config_calls.csv")
    shutil.copytree(RUNS, root / "runs")
    assert ingest([root]).warnings == []


# --- reused loads ---------------------------------------------------------------------------------------

def test_reused_load_has_no_load_time_in_the_table(root):
    shutil.copytree(RUNS, root / "runs")
    rec_path = root / "runs" / "s1" / "ok_job" / "run.json"
    rec = json.loads(rec_path.read_text())
    rec["load"] = {"load_ms": 822.0, "reused": True, "loads_in_process": 1}
    rec_path.write_text(json.dumps(rec))
    df = ingest([root]).frame
    ok = df[df["status"] == "ok"]
    assert len(ok) and ok["load_ms"].isna().all() and ok["load_reused"].all()
