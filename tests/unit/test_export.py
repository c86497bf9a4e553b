"""harness.export: every format on a real run, pytest-benchmark's layout and statistics, and every
format read back to the same sample table and configurations."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import export as ex
from harness.analysis import stats, table
from harness.analysis.formats import embedded, llamabench, tidy

DATA = Path(__file__).resolve().parents[1] / "data"
STATS_KEYS = {"min", "max", "mean", "stddev", "rounds", "median", "iqr", "q1", "q3", "iqr_outliers",
              "stddev_outliers", "outliers", "ld15iqr", "hd15iqr", "ops", "total", "data", "iterations"}
BENCH_KEYS = {"group", "name", "fullname", "params", "param", "extra_info", "options", "stats"}


def record() -> dict:
    return json.loads((DATA / "run_v1.json").read_text())


def frame_of(*recs: dict):
    return table.frame([r for i, rec in enumerate(recs) for r in table.rows_from_record(rec, f"run{i}.json")])


@pytest.fixture(scope="module")
def df():
    return frame_of(record())


def strict_json(text: str):
    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_every_format_exports_the_real_run(df, fmt):
    out = ex.export(df, fmt)
    assert isinstance(out, bytes if fmt == "parquet" else str)
    assert len(out) > 100
    if fmt.startswith("llama-bench"):
        assert out == llamabench.dump(df, fmt)
        assert llamabench.sniff(out) == fmt


def test_unknown_format_names_the_allowed_ones(df):
    with pytest.raises(ValueError) as e:
        ex.export(df, "xlsx")
    assert "xlsx" in str(e.value) and all(f in str(e.value) for f in ex.FORMATS)


def test_csv_round_trips_through_pandas(df):
    back = pd.read_csv(io.StringIO(ex.export(df, "csv")))
    assert list(back.columns) == list(table.NAMES)
    assert back["decode_tps"].tolist() == pytest.approx(df["decode_tps"].tolist(), rel=1e-15)
    assert back["run_id"].tolist() == df["run_id"].tolist()


def test_parquet_round_trips_with_dtypes(df):
    back = pd.read_parquet(io.BytesIO(ex.export(df, "parquet")))
    assert list(back.columns) == list(table.NAMES)
    pd.testing.assert_frame_equal(back, df)


def test_pytest_benchmark_layout(df):
    doc = strict_json(ex.export(df, "pytest-benchmark"))
    assert set(doc) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["datetime"] == record()["started_at"]
    assert doc["machine_info"]["hardware"] == ["AMD EPYC"]
    (bench,) = doc["benchmarks"]
    assert set(bench) == BENCH_KEYS
    assert set(bench["stats"]) == STATS_KEYS
    stats, extra = bench["stats"], bench["extra_info"]
    ok = df[df["status"] == "ok"]
    assert stats["data"] == pytest.approx((ok["e2e_ms"] / 1e3).tolist())  # seconds, pytest-benchmark's unit
    assert stats["mean"] == pytest.approx(statistics.mean(stats["data"]))
    assert stats["rounds"] == len(ok) == 2
    assert extra["decode_tps"] == pytest.approx(ok["decode_tps"].mean())
    assert extra["prefill_tps"] == pytest.approx(ok["prefill_tps"].mean())
    assert extra["ttft_ms"] == pytest.approx(ok["ttft_ms"].mean())
    rec = record()
    assert extra["decode_tps_weighted"] == pytest.approx(rec["aggregates"]["decode_tps_weighted"])
    assert extra["n_failed"] == 0 and extra["timed_metric"] == "e2e_ms"
    assert extra["run_id"] == rec["run_id"] and extra["n_gpu_layers_effective"] == 0
    assert extra["n_ctx"] == 2048 and extra["temperature"] == 0.8
    assert bench["params"]["n_ctx"] == 2048 and bench["params"]["n_gpu_layers"] == "all"
    assert rec["job_name"] in bench["fullname"]


@pytest.mark.parametrize("data", [[0.5], [0.3, 0.1], [3, 1, 2], [4, 1, 3, 2], [5, 1, 4, 2, 3],
                                  [0.25, 0.26, 0.24, 0.9, 0.25, 0.255], [7, 1, 6, 2, 5, 3, 4],
                                  [1, 2, 3, 4, 5, 6, 7, 8, 100]])
def test_stats_are_pytest_benchmarks_own(data):
    stats_mod = pytest.importorskip("pytest_benchmark.stats")
    theirs = stats_mod.Stats()
    for x in data:
        theirs.update(x)
    ours = ex.pytest_benchmark_stats(data)
    for field in stats_mod.Stats.fields:
        if field == "outliers":
            assert ours[field] == theirs.outliers
        else:
            assert ours[field] == pytest.approx(getattr(theirs, field)), field
    assert ours["data"] == data


def test_failed_samples_are_excluded_from_stats():
    rec = record()
    rec["status"] = "failed"
    rec["error"] = {"type": "RuntimeError", "message": "decode failed", "phase": "measure"}
    df = frame_of(rec)
    assert (df["status"] == "failed").sum() == 1
    (bench,) = strict_json(ex.export(df, "pytest-benchmark"))["benchmarks"]
    assert bench["stats"]["rounds"] == 2 and len(bench["stats"]["data"]) == 2
    assert bench["extra_info"]["n_failed"] == 1 and bench["extra_info"]["errors"] == ["decode failed"]
    assert bench["stats"]["mean"] == pytest.approx(statistics.mean(bench["stats"]["data"]))


def test_run_without_any_ok_sample_has_no_benchmark():
    ok, failed = record(), record()
    failed.update(run_id="f" * 32, job_name="broken", status="failed", repetitions=[],
                  error={"type": "ValueError", "message": "load failed", "phase": "load"})
    doc = strict_json(ex.export(frame_of(ok, failed), "pytest-benchmark"))
    assert [b["extra_info"]["run_id"] for b in doc["benchmarks"]] == [ok["run_id"]]


def test_runs_of_one_config_get_distinct_fullnames():
    a, b = record(), record()
    b["run_id"] = "0" * 32
    names = [x["fullname"] for x in strict_json(ex.export(frame_of(a, b), "pytest-benchmark"))["benchmarks"]]
    assert len(names) == 2 and len(set(names)) == 2


def test_llama_bench_import_is_timed_by_its_own_metric():
    rows = llamabench.rows((DATA / "llama_bench" / "bench.json").read_text(), "llama-bench-json", "bench.json")
    doc = strict_json(ex.export(table.frame(rows), "pytest-benchmark"))
    pp, tg = doc["benchmarks"]
    assert pp["extra_info"]["timed_metric"] == "prompt_eval_ms" and tg["extra_info"]["timed_metric"] == "decode_ms"
    assert pp["stats"]["rounds"] == tg["stats"]["rounds"] == 5
    assert tg["extra_info"]["decode_tps"] == pytest.approx(statistics.fmean([107.5, 106.9, 108.2, 109.1, 106.0]))


def test_pytest_benchmark_reads_the_export(tmp_path):
    pytest.importorskip("pytest_benchmark.cli")
    path = tmp_path / "0001_export.json"
    path.write_text(ex.export(sweep_frame(), "pytest-benchmark"))  # a failed run: a harness key at the top
    assert embedded.KEY in json.loads(path.read_text())
    proc = subprocess.run([sys.executable, "-c", "from pytest_benchmark.cli import main; main()", "compare",
                           str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "short_chat[" in proc.stdout and "Rounds" in proc.stdout


# ------------------------------------------------------------------------------------- lossless round trips

def sweep_frame():
    """Two configurations of run_v1 (n_ctx 2048 and 4096) and a third that failed to load."""
    a, b, failed = record(), record(), record()
    b.update(run_id="b" * 32, job_name="runtime.n_ctx=4096")
    b["config"]["runtime"]["n_ctx"] = 4096
    b["effective"].update(n_ctx_effective=4096, effective_id="4096")
    for r in b["repetitions"]:
        r["decode_tps"] *= 0.9
    failed.update(run_id="f" * 32, job_name="runtime.n_ctx=65536", status="failed", repetitions=[],
                  error={"type": "RuntimeError", "message": "failed to create context", "phase": "load"})
    failed["config"]["runtime"]["n_ctx"] = 65536
    failed["effective"].update(n_ctx_effective=65536, effective_id="65536")
    return frame_of(a, b, failed)


def read_back(out, fmt: str) -> list[dict]:
    """The rows our readers make of an export: formats.tidy for csv / parquet, the harness field
    of each pytest-benchmark benchmark, llama-bench's reader for its formats."""
    if fmt == "csv":
        return tidy.csv_rows(out, "export.csv")
    if fmt == "parquet":
        return tidy.parquet_rows(out, "export.parquet")
    if fmt == "pytest-benchmark":
        return embedded.pytest_benchmark_rows(strict_json(out), "export.json")
    return llamabench.rows(out, fmt, "export")


def in_order(df):
    return (df.drop(columns=["source_format", "source_file"]).sort_values(["run_id", "rep"], kind="stable")
            .reset_index(drop=True))


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_every_format_carries_the_whole_sample_table(fmt):
    df = sweep_frame()
    back = table.frame(read_back(ex.export(df, fmt), fmt))
    pd.testing.assert_frame_equal(in_order(back), in_order(df), check_exact=True)
    configs = stats.configurations(back)
    pd.testing.assert_frame_equal(configs, stats.configurations(df), check_exact=True)
    assert len(configs) == 3 and configs["n_failed"].tolist() == [0, 0, 1]
    assert configs["n_ctx"].tolist() == [2048, 4096, 65536]


def test_pytest_benchmark_carries_runs_without_a_benchmark_at_the_top():
    doc = strict_json(ex.export(sweep_frame(), "pytest-benchmark"))
    assert len(doc["benchmarks"]) == 2
    (carried,) = doc[embedded.KEY]["runs"]
    assert carried["run"]["run_id"] == "f" * 32 and carried["run"]["status"] == "failed"
    assert all(b["extra_info"][embedded.KEY]["runs"][0]["run"]["run_id"] == b["extra_info"]["run_id"]
               for b in doc["benchmarks"])


def test_pytest_benchmarks_own_document_is_not_read_as_ours():
    doc = strict_json(ex.export(sweep_frame(), "pytest-benchmark"))
    del doc[embedded.KEY]
    for b in doc["benchmarks"]:
        del b["extra_info"][embedded.KEY]
    assert embedded.pytest_benchmark_rows(doc, "x.json") is None


def test_tidy_csv_header_is_recognised_also_without_newer_columns(df):
    header = list(table.NAMES)
    assert tidy.sniff_csv_header(header)
    assert tidy.sniff_csv_header([c for c in header if c not in ("model_desc", "weights")])  # an older export
    assert not tidy.sniff_csv_header(["prompt", "ttft_s", "tokens_s"])
    assert not tidy.sniff_csv_header(header + ["something_else"])
    assert not tidy.sniff_csv_header(["run_id", "status", "model"])  # no metric
    assert tidy.is_parquet(ex.export(df, "parquet")) and not tidy.is_parquet(b"PAR1 not really")


@pytest.mark.parametrize("bad", [
    None, [], {"v": 2, "runs": []}, {"v": 1}, {"v": 1, "runs": [{"run": {}}]},
    {"v": 1, "runs": [{"run": {"n_ctx": [1]}, "rows": []}]},
    {"v": 1, "runs": [{"run": {}, "rows": [{"decode_tps": {"x": 1}}]}]},
    {"v": 1, "runs": [{"run": {}, "rows": ["not a row"]}]},
])
def test_a_malformed_harness_field_is_a_value_error(bad):
    with pytest.raises(ValueError, match="harness field"):
        embedded.unpack(bad, "llama-bench-json", "x")


def test_unknown_columns_in_the_harness_field_are_ignored_and_a_run_is_read_once():
    field = {"v": 1, "runs": [{"run": {"run_id": "r1", "status": "ok", "from_the_future": 1},
                               "rows": [{"rep": 0, "decode_tps": 50.0}, {"rep": 1, "decode_tps": 51.0}]}]}
    seen = embedded.Seen()
    rows = embedded.unpack(field, "llama-bench-json", "x", seen)
    assert [r["decode_tps"] for r in rows] == [50.0, 51.0] and "from_the_future" not in rows[0]
    assert rows[0]["source_format"] == "llama-bench-json" and rows[0]["source_file"] == "x"
    assert embedded.unpack(field, "llama-bench-json", "x", seen) == []
