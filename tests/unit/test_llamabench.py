"""llama-bench formats: sniffing, reading the golden files, refusing hostile SQL, and dump -> rows."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
import statistics
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import table
from harness.analysis.formats import embedded
from harness.analysis.formats import llamabench as lb
from harness.analysis.formats import llamabench_desc, llamabench_sql

DATA = Path(__file__).resolve().parents[1] / "data"
GOLD = DATA / "llama_bench"
EXT = {"llama-bench-json": "json", "llama-bench-jsonl": "jsonl", "llama-bench-csv": "csv", "llama-bench-sql": "sql"}
PP = [980.1, 975.3, 990.2, 1001.0, 950.9]
TG = [107.5, 106.9, 108.2, 109.1, 106.0]
# compare-llama-bench.py (ggml-org/llama.cpp scripts/) refuses json/jsonl/csv input without these
# (LLAMA_BENCH_KEY_PROPERTIES + build_commit, test_time, avg_ts) and joins its table on the first list.
COMPARE_KEYS = ["cpu_info", "gpu_info", "backends", "n_gpu_layers", "tensor_buft_overrides", "model_filename",
                "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict", "poll", "n_threads",
                "type_k", "type_v", "use_mmap", "no_kv_offload", "split_mode", "main_gpu", "tensor_split",
                "flash_attn", "n_prompt", "n_gen", "n_depth"]
COMPARE_REQUIRED = COMPARE_KEYS + ["build_commit", "test_time", "avg_ts"]


def golden(fmt: str) -> str:
    return (GOLD / f"bench.{EXT[fmt]}").read_text()


def read(fmt: str, source_file: str = "bench") -> list[dict]:
    return lb.rows(golden(fmt), fmt, source_file)


def without(rows: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in rows]


@pytest.fixture(scope="module")
def run_frame():
    rec = json.loads((DATA / "run_v1.json").read_text())
    return table.frame(table.rows_from_record(rec, "s1/job/run.json"))


# ------------------------------------------------------------------------------------- sniff

@pytest.mark.parametrize("fmt", lb.FORMATS)
def test_sniff_recognises_each_golden(fmt):
    assert lb.sniff(golden(fmt)) == fmt


@pytest.mark.parametrize("text", [
    "", "   \n", "[]", "{}", "not,a,bench\n1,2,3\n",
    (DATA / "run_v1.json").read_text(),
    json.dumps({"benchmarks": [], "machine_info": {}}),
    json.dumps([{"model_filename": "m", "n_prompt": 1, "n_gen": 0}]),  # avg_ts missing
    "CREATE TABLE t (a TEXT);\nINSERT INTO t (a) VALUES ('x');\n",
])
def test_sniff_says_none_for_other_content(text):
    assert lb.sniff(text) is None


# ------------------------------------------------------------------------------------- read goldens

@pytest.mark.parametrize("fmt", ["llama-bench-json", "llama-bench-jsonl"])
def test_json_goldens_give_every_sample_exactly(fmt):
    rows = read(fmt)
    pp = [r for r in rows if r["workload"] == "pp512"]
    tg = [r for r in rows if r["workload"] == "tg128"]
    assert len(rows) == 10 and len(pp) == 5 and len(tg) == 5
    assert [r["prefill_tps"] for r in pp] == PP
    assert [r["decode_tps"] for r in tg] == TG
    assert [r["rep"] for r in pp] == [0, 1, 2, 3, 4]
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    # samples_ns as printed, in ms; each consistent with its t/s (llama-bench: t/s = 1e9 * n / ns)
    assert pp[0]["prompt_eval_ms"] == 522395674 / 1e6
    for r in pp:
        assert r["prefill_tps"] == pytest.approx(512 / (r["prompt_eval_ms"] / 1e3), rel=1e-5)
        assert r["decode_tps"] is None and r["n_prompt_tokens"] == 512 and r["n_gen_tokens"] is None
    for r in tg:
        assert r["decode_tps"] == pytest.approx(128 / (r["decode_ms"] / 1e3), rel=1e-5)
        # tg128 = 128 decode steps = the decode phase of 129 generated tokens in our glossary
        assert r["n_gen_tokens"] == 129 and r["prefill_tps"] is None and r["n_prompt_tokens"] is None
    r = rows[0]
    assert r["model"] == "gemma-3-270m-it-Q4_K_M.gguf"
    assert r["engine"] == "llama.cpp 8f3a2c1 (6123) CUDA"
    assert r["hardware"] == "AMD Ryzen 9 7950X 16-Core Processor | NVIDIA GeForce RTX 4090"
    assert (r["n_gpu_layers"], r["n_batch"], r["n_ubatch"], r["n_threads"]) == ("99", 2048, 512, 16)
    assert (r["flash_attn"], r["type_k"], r["type_v"]) == ("on", "f16", "f16")
    assert r["started_at"] == "2025-11-03T09:14:27Z" and r["source_format"] == fmt
    assert len({x["run_id"] for x in pp}) == 1 and pp[0]["run_id"] != tg[0]["run_id"]
    assert pp[0]["job"].startswith("pp512 ") and "ngl=99" in pp[0]["job"]


def test_json_and_jsonl_goldens_give_identical_rows():
    a, b = read("llama-bench-json"), read("llama-bench-jsonl")
    assert without(a, "source_format") == without(b, "source_format")
    assert {r["source_format"] for r in a} == {"llama-bench-json"}


def test_csv_and_sql_goldens_give_one_row_per_test_from_the_averages():
    # llama-bench's csv and sql printers write avg/stddev only, never the samples
    c, s = read("llama-bench-csv"), read("llama-bench-sql")
    assert without(c, "source_format") == without(s, "source_format")
    assert [r["workload"] for r in c] == ["pp512", "tg128"]
    assert c[0]["prefill_tps"] == 979.5 and c[0]["prompt_eval_ms"] == 522871078 / 1e6
    assert c[1]["decode_tps"] == 107.54 and c[1]["decode_ms"] == 1190371118 / 1e6
    assert c[0]["prefill_tps"] == pytest.approx(statistics.fmean(PP), rel=1e-6)
    assert c[1]["decode_tps"] == pytest.approx(statistics.fmean(TG), rel=1e-6)


def test_all_four_goldens_agree_on_everything_but_the_samples():
    ident = ("run_id", "job", "status", "started_at", "hardware", "model", "engine", "n_gpu_layers", "n_ctx",
             "n_batch", "n_ubatch", "n_threads", "flash_attn", "type_k", "type_v", "workload",
             "n_prompt_tokens", "n_gen_tokens")
    per_fmt = {f: [tuple(r[k] for k in ident) for r in read(f)] for f in lb.FORMATS}
    firsts = {f: sorted(set(v)) for f, v in per_fmt.items()}
    assert len({tuple(v) for v in firsts.values()}) == 1, firsts
    assert len(firsts["llama-bench-json"]) == 2


@pytest.mark.parametrize("fmt", lb.FORMATS)
def test_golden_rows_fit_the_tidy_table(fmt):
    df = table.frame(read(fmt))
    assert list(df.columns) == list(table.NAMES)
    assert df["n_gpu_layers"].tolist() == ["99"] * len(df)


def test_golden_fields_are_in_the_one_field_list():
    fields = json.loads(golden("llama-bench-json"))[0].keys()
    assert set(fields) <= set(lb.FIELDS)
    header = next(csv.reader(io.StringIO(golden("llama-bench-csv"))))
    assert [f for f in lb.FIELDS if f in header] == header  # same order as llama-bench prints


def test_run_id_is_stable_and_depends_on_file_and_index():
    assert read("llama-bench-json", "a.json")[0]["run_id"] == read("llama-bench-json", "a.json")[0]["run_id"]
    assert read("llama-bench-json", "a.json")[0]["run_id"] != read("llama-bench-json", "b.json")[0]["run_id"]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="llama-bench-json"):
        lb.rows(golden("llama-bench-json"), "json", "x")


# ------------------------------------------------------------------------------------- other builds, odd tests

def _record(**kw) -> dict:
    base = json.loads(golden("llama-bench-json"))[0]
    return base | kw


def test_older_builds_bool_flash_attn_and_table_named_test():
    old = {k: v for k, v in _record(flash_attn=True).items() if k not in ("n_depth", "load_mode")}
    rows = lb.rows(json.dumps([old, _record(flash_attn=False), _record(flash_attn=-1)]), "llama-bench-json", "x")
    assert [rows[i]["flash_attn"] for i in (0, 5, 10)] == ["on", "off", "auto"]
    sql = golden("llama-bench-sql").replace("llama_bench", "test")
    assert lb.sniff(sql) == "llama-bench-sql"
    assert [r["prefill_tps"] for r in lb.rows(sql, "llama-bench-sql", "x")][:1] == [979.5]


def test_test_without_samples_is_one_failed_row():
    rows = lb.rows(json.dumps([_record(samples_ns=[], samples_ts=[], avg_ns=0, avg_ts=0.0)]), "llama-bench-json", "x")
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["error"] == "no samples"
    assert rows[0]["prefill_tps"] is None and rows[0]["prompt_eval_ms"] is None
    csv_text = golden("llama-bench-csv").replace('"979.500000"', '"0.000000"')
    got = lb.rows(csv_text, "llama-bench-csv", "x")
    assert [r["status"] for r in got] == ["failed", "ok"]


def test_pp_plus_tg_and_depth_give_e2e_samples():
    rec = _record(n_prompt=512, n_gen=128, n_depth=4096, samples_ns=[700000000, 710000000],
                  samples_ts=[914.29, 901.41])
    rows = lb.rows(json.dumps([rec]), "llama-bench-json", "x")
    assert [r["e2e_ms"] for r in rows] == [700.0, 710.0]
    assert rows[0]["workload"] == "pp512+tg128 @ d4096"
    assert rows[0]["n_ctx"] == 512 + 128 + 4096 and rows[0]["n_gen_tokens"] == 129
    assert rows[0]["prefill_tps"] is None and rows[0]["decode_tps"] is None


def test_mismatched_sample_arrays_are_an_error():
    with pytest.raises(ValueError, match="samples"):
        lb.rows(json.dumps([_record(samples_ts=[1.0])]), "llama-bench-json", "x")


# ------------------------------------------------------------------------------------- hostile SQL
# Decision: SQL that does anything but create the llama-bench table and insert literal rows into it
# raises ValueError for the whole file (no partial rows from a file that tried something else).

def test_junk_sql_golden_is_refused():
    with pytest.raises(ValueError, match="refused"):
        lb.rows((GOLD / "junk.sql").read_text(), "llama-bench-sql", "junk.sql")


@pytest.mark.parametrize("stmt", [
    "DROP TABLE test;",
    "DROP TABLE llama_bench;",
    "DELETE FROM llama_bench;",
    "UPDATE llama_bench SET n_prompt = 1;",
    "PRAGMA writable_schema = 1;",
    "SELECT * FROM llama_bench;",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "INSERT INTO llama_bench (n_prompt) SELECT x FROM c;",
    "INSERT INTO llama_bench (n_prompt) SELECT n_prompt FROM llama_bench;",
    "INSERT INTO llama_bench (model_filename) VALUES ((SELECT 1));",
    "INSERT INTO llama_bench (model_filename) VALUES (zeroblob(1000000000));",
    "INSERT INTO llama_bench (model_filename) VALUES (load_extension('/tmp/x'));",
    "INSERT INTO llama_bench (model_filename) VALUES ('a') ON CONFLICT DO NOTHING;",
    "CREATE TABLE other (a TEXT);",
    "CREATE TABLE test (a DEFAULT (randomblob(1000000000)));",
    "CREATE TABLE test AS SELECT * FROM llama_bench;",
    "CREATE TEMP TABLE test (a TEXT);",
    "CREATE TRIGGER t AFTER INSERT ON llama_bench BEGIN DELETE FROM llama_bench; END;",
    "CREATE VIEW v AS SELECT 1;",
    "INSERT INTO sqlite_master (type, name) VALUES ('table', 'x');",
    "/* looks like a comment */ DETACH DATABASE main;",
])
def test_each_hostile_statement_is_refused(stmt):
    with pytest.raises(ValueError, match="refused"):
        lb.rows(golden("llama-bench-sql") + stmt + "\n", "llama-bench-sql", "x")


@pytest.mark.parametrize("stmt", ["ATTACH DATABASE '{p}' AS evil;", "ATTACH '{p}' AS evil;", "VACUUM INTO '{p}';"])
def test_sql_cannot_attach_or_write_files(tmp_path, stmt):
    target = tmp_path / "written.db"
    with pytest.raises(ValueError, match="refused"):
        lb.rows(golden("llama-bench-sql") + stmt.format(p=target) + "\n", "llama-bench-sql", "x")
    assert not target.exists()


def test_sql_step_budget_stops_work(monkeypatch):
    monkeypatch.setattr(llamabench_sql, "SQL_STEPS_BASE", 0)
    monkeypatch.setattr(llamabench_sql, "SQL_STEPS_PER_CHAR", 0)
    with pytest.raises(ValueError, match="step budget"):
        read("llama-bench-sql")


def test_sql_size_limit(monkeypatch):
    monkeypatch.setattr(llamabench_sql, "MAX_SQL_CHARS", 1000)
    with pytest.raises(ValueError, match="limit"):
        read("llama-bench-sql")


def test_sql_over_long_string_is_refused():
    long = "INSERT INTO llama_bench (model_filename) VALUES ('" + "x" * 2_000_000 + "');\n"
    with pytest.raises(ValueError, match="refused"):
        lb.rows(golden("llama-bench-sql") + long, "llama-bench-sql", "x")


def test_sql_quoting_semicolons_and_comments_inside_values():
    text = golden("llama-bench-sql").replace("AMD Ryzen 9 7950X 16-Core Processor", "it''s; -- odd /* cpu")
    text = "-- made by llama-bench\n" + text.replace(";\n", "; /* end */\n", 1)
    rows = lb.rows(text, "llama-bench-sql", "x")
    assert rows[0]["hardware"] == "it's; -- odd /* cpu | NVIDIA GeForce RTX 4090" and len(rows) == 2


# ------------------------------------------------------------------------------------- dump

@pytest.mark.parametrize("fmt", lb.FORMATS)
def test_dump_then_rows_round_trips_our_run(run_frame, fmt):
    # what llama.cpp's readers see: llama-bench's fields only, no harness field
    text = lb.dump(run_frame, fmt, carry=False)
    assert lb.sniff(text) == fmt and embedded.KEY not in text
    rows = lb.rows(text, fmt, "export")
    ours = run_frame[run_frame["status"] == "ok"]
    pp = [r for r in rows if r["prefill_tps"] is not None]
    tg = [r for r in rows if r["decode_tps"] is not None]
    assert len(pp) == len(ours) == len(tg) == 2
    assert [r["prefill_tps"] for r in pp] == pytest.approx(ours["prefill_tps"].tolist(), rel=1e-12)
    assert [r["prompt_eval_ms"] for r in pp] == pytest.approx(ours["prompt_eval_ms"].tolist(), rel=1e-9)
    assert [r["decode_tps"] for r in tg] == pytest.approx(ours["decode_tps"].tolist(), rel=1e-12)
    assert [r["decode_ms"] for r in tg] == pytest.approx(ours["decode_ms"].tolist(), rel=1e-9)
    # llama-bench's n_gpu_layers is an int: the effective offload (0 here: CPU build, "all" requested)
    assert {r["n_gpu_layers"] for r in rows} == {str(int(ours["n_gpu_layers_effective"].iloc[0]))} == {"0"}
    assert {r["n_prompt_tokens"] for r in pp} == {int(ours["n_prompt_tokens"].iloc[0])} == {31}
    assert {r["n_gen_tokens"] for r in tg} == {int(ours["n_gen_tokens"].iloc[0])} == {8}
    # llama-cpp-python 0.3.36 vendors llama.cpp 0c1e57098; a CPU build
    assert {r["engine"] for r in rows} == {"llama.cpp 0c1e57098 CPU"}
    assert {r["hardware"] for r in rows} == set(ours["hardware"])
    assert {r["model"] for r in rows} == set(ours["model"])
    assert {r["model_desc"] for r in rows} == {
        "gemma3 270M Q4_K - Medium [n_ctx=2048 temperature=0.8 top_p=0.95 top_k=40 min_p=0.05 "
        "repeat_penalty=1 timing=python]"}
    # the decode test follows the 31-token prompt: llama-bench's tg7 at depth 31
    assert {r["workload"] for r in rows} == {"pp31", "tg7 @ d31"}


@pytest.mark.parametrize("fmt", lb.FORMATS)
def test_dump_carries_every_row_of_the_run(run_frame, fmt):
    text = lb.dump(run_frame, fmt)
    assert lb.sniff(text) == fmt
    back = table.frame(lb.rows(text, fmt, "export"))
    assert set(back["source_format"]) == {fmt} and set(back["source_file"]) == {"export"}
    drop = ["source_format", "source_file"]
    pd.testing.assert_frame_equal(back.drop(columns=drop), run_frame.drop(columns=drop), check_exact=True)


@pytest.mark.parametrize("carry", [False, True])
def test_all_dump_formats_read_back_identically(run_frame, carry):
    got = {f: without(lb.rows(lb.dump(run_frame, f, carry), f, "export"), "source_format") for f in lb.FORMATS}
    first = got["llama-bench-json"]
    assert len(first) == (2 if carry else 4)  # our two samples, or llama-bench's pp and tg tests of them
    for f, rows in got.items():
        assert rows == first, f


@pytest.mark.parametrize("fmt", lb.FORMATS)
def test_dump_of_imported_llama_bench_round_trips(fmt):
    df = table.frame(read("llama-bench-json"))
    rows = lb.rows(lb.dump(df, fmt), fmt, "bench")
    assert [r["prefill_tps"] for r in rows if r["prefill_tps"] is not None] == PP
    assert [r["decode_tps"] for r in rows if r["decode_tps"] is not None] == TG
    assert {r["engine"] for r in rows} == {"llama.cpp 8f3a2c1 (6123) CUDA"}
    assert {r["workload"] for r in rows} == {"pp512", "tg128"} and {r["n_gpu_layers"] for r in rows} == {"99"}


def test_dump_statistics_follow_llama_bench(run_frame):
    pp, tg = lb.tests(run_frame)
    for t in (pp, tg):
        assert t["avg_ts"] == pytest.approx(statistics.fmean(t["samples_ts"]))
        assert t["stddev_ts"] == pytest.approx(statistics.stdev(t["samples_ts"]))
        assert t["avg_ns"] == sum(t["samples_ns"]) // len(t["samples_ns"])
        assert t["stddev_ns"] == int(statistics.stdev(t["samples_ns"]))
        assert all(isinstance(x, int) for x in t["samples_ns"])
    assert (pp["n_prompt"], pp["n_gen"], tg["n_prompt"], tg["n_gen"]) == (31, 0, 0, 7)
    assert (pp["n_depth"], tg["n_depth"]) == (0, 31)
    assert pp["test_time"] == "2026-11-26T01:03:52Z" and pp["build_commit"] == tg["build_commit"] == "0c1e57098"
    assert pp["model_type"].startswith("gemma3 270M Q4_K - Medium [n_ctx=2048 temperature=0.8 ")
    one = lb.tests(run_frame.iloc[:1])
    assert [t["stddev_ts"] for t in one] == [0.0, 0.0] and [t["stddev_ns"] for t in one] == [0, 0]


def test_dump_leaves_failed_samples_out_of_the_tests_but_carries_them(run_frame):
    df = run_frame.copy()
    df.loc[0, "status"] = "failed"
    tests = lb.tests(df)
    assert [len(t["samples_ts"]) for t in tests] == [1, 1]
    assert tests[0]["samples_ts"] == [pytest.approx(run_frame["prefill_tps"].iloc[1])]
    back = table.frame(lb.rows(lb.dump(df, "llama-bench-json"), "llama-bench-json", "x"))
    assert back["status"].tolist() == ["failed", "ok"]


def test_runs_without_an_ok_sample_ride_along_spread_over_the_tests(run_frame):
    failed = run_frame.copy()
    failed["run_id"], failed["status"], failed["error"] = "f" * 32, "failed", "load failed"
    failed2 = failed.assign(run_id="e" * 32)
    both = pd.concat([run_frame, failed, failed2], ignore_index=True)
    tests = lb.tests(both)
    assert len(tests) == 2  # the failed runs have no test of their own...
    carried = [[r["run"]["run_id"] for r in t["harness"]["runs"]] for t in tests]
    assert carried == [[run_frame["run_id"][0], "f" * 32], [run_frame["run_id"][0], "e" * 32]]
    back = table.frame(lb.rows(lb.dump(both, "llama-bench-csv"), "llama-bench-csv", "x"))
    assert (back["status"] == "failed").sum() == 4 and set(back["error"].dropna()) == {"load failed"}
    # ...and an export of failed runs only is one test without samples, as llama-bench has none
    (only,) = lb.tests(failed.iloc[:1])
    assert only["samples_ts"] == [] and only["avg_ts"] == 0.0 and only["avg_ns"] == 0
    assert json.loads(lb.dump(failed.iloc[:1], "json", carry=False))[0]["avg_ts"] == 0.0
    rows = lb.rows(lb.dump(failed.iloc[:1], "json"), "llama-bench-json", "x")
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["error"] == "load failed"


def test_dump_writes_the_one_field_list_in_every_format(run_frame):
    js = json.loads(lb.dump(run_frame, "llama-bench-json"))
    assert all(list(t) == list(lb.FIELDS) for t in js)
    jl = [json.loads(line) for line in lb.dump(run_frame, "llama-bench-jsonl").splitlines()]
    assert jl == js
    assert next(csv.reader(io.StringIO(lb.dump(run_frame, "llama-bench-csv")))) == list(lb.FIELDS)
    sql = lb.dump(run_frame, "llama-bench-sql")
    assert f"INSERT INTO {lb.SQL_TABLE} ({', '.join(lb.FIELDS)}) VALUES (" in sql
    assert isinstance(js[0]["samples_ts"], list) and isinstance(js[0]["cpu_strict"], bool)


@pytest.mark.parametrize("fmt", ["llama-bench-json", "llama-bench-jsonl", "llama-bench-csv"])
def test_dump_has_every_key_compare_llama_bench_requires(run_frame, fmt):
    text = lb.dump(run_frame, fmt)
    if fmt == "llama-bench-csv":
        entries = list(csv.DictReader(io.StringIO(text)))
    elif fmt == "llama-bench-json":
        entries = json.loads(text)
    else:
        entries = [json.loads(line) for line in text.splitlines()]
    assert len(entries) == 2
    for e in entries:
        assert not set(COMPARE_REQUIRED) - set(e)


def test_sql_export_loads_into_sqlite_as_is(run_frame):
    df = run_frame.copy()
    df["model"] = "it's a model"  # a quote must be doubled, not break the statement
    sql = lb.dump(df, "llama-bench-sql")
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    assert db.execute(f"SELECT COUNT(*) FROM {lb.SQL_TABLE}").fetchone()[0] == len(lb.tests(df)) == 2
    got = db.execute(f"SELECT model_filename, n_prompt, n_gen, n_gpu_layers, avg_ts FROM {lb.SQL_TABLE}").fetchall()
    assert got[0][:4] == ("it's a model", 31, 0, 0) and got[1][:4] == ("it's a model", 0, 7, 0)
    assert got[1][4] == pytest.approx(run_frame["decode_tps"].mean())
    # compare-llama-bench.py's query: a self-join on its key columns, grouped per test
    on = " AND ".join(f"tb.{k} = tc.{k}" for k in COMPARE_KEYS)
    rows = db.execute(f"SELECT tb.n_prompt, tb.n_gen, AVG(tb.avg_ts), AVG(tc.avg_ts) FROM {lb.SQL_TABLE} tb "
                      f"JOIN {lb.SQL_TABLE} tc ON {on} GROUP BY tb.n_gen, tb.n_prompt, tb.n_depth").fetchall()
    assert len(rows) == 2 and all(math.isclose(r[2], r[3]) for r in rows)


def test_dump_unknown_format_is_refused(run_frame):
    with pytest.raises(ValueError, match="llama-bench-sql"):
        lb.dump(run_frame, "markdown")


def test_sqlite_dump_of_a_llama_bench_database_reads_too():
    db = sqlite3.connect(":memory:")
    db.executescript(golden("llama-bench-sql"))
    text = "\n".join(db.iterdump())  # BEGIN TRANSACTION; CREATE TABLE ...; INSERT INTO "llama_bench" VALUES(...)
    assert lb.sniff(text) == "llama-bench-sql"
    assert without(lb.rows(text, "llama-bench-sql", "bench"), "source_format") == \
        without(read("llama-bench-sql"), "source_format")


def test_malformed_values_are_a_value_error_naming_the_test():
    recs = json.loads(golden("llama-bench-json"))
    recs[1]["n_gen"] = [128]
    with pytest.raises(ValueError, match="test 1 of bad.json"):
        lb.rows(json.dumps(recs), "llama-bench-json", "bad.json")


# ------------------------------------------------------------------------------------- model and build names

@pytest.mark.parametrize("arch, n_layers, file_type, desc", [
    ("gemma3", 18, 15, "gemma3 270M Q4_K - Medium"),  # llama-bench on the default model
    ("gemma3", 26, 15, "gemma3 1B Q4_K - Medium"),
    ("gemma3", 62, 18, "gemma3 27B Q6_K"),
    ("llama", 30, 7, "llama 256M Q8_0"),  # SmolLM2-135M: llama.cpp's size class for 30 layers
    ("gemma3", 19, 1, "gemma3 ?B F16"),  # a layer count llama.cpp has no class for
    ("qwen9", 4, 2, "qwen9 ?B Q4_0"),
    ("gemma3", 18, 1024 | 15, "gemma3 270M (guessed) Q4_K - Medium"),
    ("gemma3", 18, 99, "gemma3 270M unknown, may not work"),
    (None, 18, 15, None), ("gemma3", 18, None, None),
])
def test_model_desc_is_llama_model_desc(arch, n_layers, file_type, desc):
    assert llamabench_desc.model_desc(arch, n_layers, file_type) == desc


def test_our_run_record_gives_the_description_llama_bench_prints(run_frame):
    assert set(run_frame["model_desc"]) == {"gemma3 270M Q4_K - Medium"}


@pytest.mark.parametrize("engine, want", [
    ("llama-cpp-python 0.3.36 cpu python", ("0c1e57098", 0, None)),
    ("llama-cpp-python 0.3.36 gpu native", ("0c1e57098", 0, None)),
    ("llama-cpp-python 0.3.35 cpu python", ("4df29be4f", 0, None)),
    ("llama.cpp 8f3a2c1 (6123) CUDA", ("8f3a2c1", 6123, "CUDA")),
    ("llama.cpp unknown", ("unknown", 0, None)),
    (None, ("unknown", 0, None)),
])
def test_build_commit(engine, want):
    assert llamabench_desc.build_commit(engine) == want


def test_build_commit_of_an_unknown_version_is_a_stable_hash_of_the_build():
    cpu_py, cpu_native, gpu = (llamabench_desc.build_commit(f"llama-cpp-python 0.4.0 {x}")[0]
                               for x in ("cpu python", "cpu native", "gpu python"))
    assert re.fullmatch(r"[0-9a-f]{9}", cpu_py) and cpu_py == cpu_native != gpu  # the timing path is not the build
    assert cpu_py == llamabench_desc.build_commit("llama-cpp-python 0.4.0 cpu python")[0]
    other = llamabench_desc.build_commit("ollama 0.5.1")[0]
    assert re.fullmatch(r"[0-9a-f]{9}", other)


def test_model_type_keeps_configurations_llama_bench_cannot_name_apart(run_frame):
    variants = []
    for change in ({}, {"temperature": 0.0}, {"n_ctx_effective": 4096.0}, {"top_k": 1.0},
                   {"engine": "llama-cpp-python 0.3.36 cpu native"}, {"weights": "twin"}):
        df = run_frame.copy()
        for k, v in change.items():
            df[k] = v
        (pp, tg) = lb.tests(df)
        assert pp["model_type"] == tg["model_type"]
        variants.append(pp["model_type"])
    assert len(set(variants)) == len(variants), variants
    assert variants[1].startswith("gemma3 270M Q4_K - Medium [n_ctx=2048 temperature=0 ")
    assert variants[4].endswith(" timing=native]") and variants[5].endswith(" weights=twin]")
    # a frame without llama.cpp's description (an import) names the model as it has it
    df = run_frame.copy()
    df["model_desc"] = None
    assert lb.tests(df)[0]["model_type"].startswith("gemma3_270m [")


def test_a_bad_harness_field_names_the_test():
    recs = json.loads(golden("llama-bench-json"))
    recs[1]["harness"] = {"v": 1, "runs": [{"run": {}, "rows": [{"decode_tps": [1, 2]}]}]}
    with pytest.raises(ValueError, match="test 1 of bad.json"):
        lb.rows(json.dumps(recs), "llama-bench-json", "bad.json")
