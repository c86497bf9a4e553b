"""Exports are lossless: `harness export` then `harness analyze` of the file gives the
configurations and statistics of the result folders, in every format; llama.cpp's own
compare-llama-bench.py reads our llama-bench exports and keeps our configurations apart.

The result folders are a 2x2 sweep (n_ctx x temperature, 3 repetitions) plus one point that
failed, written as run.json records (the shape of tests/data/run_v1.json, a real run) with the
store's atomic writer, once for llama-cpp-python 0.3.36 and once, 20% faster at decoding, for
0.3.35.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from harness import cli
from harness.analysis import pipeline
from harness.export import FORMATS
from harness.store import write_json

DATA = Path(__file__).resolve().parents[1] / "data"
N_CTX = (512, 1024)
TEMPERATURES = (0.0, 0.8)
COMMITS = {"0.3.36": "0c1e57098", "0.3.35": "4df29be4f"}  # the llama.cpp each vendors
DECODE_SPEED = {"0.3.36": 1.0, "0.3.35": 1.2}
SUFFIX = {"csv": "csv", "parquet": "parquet", "pytest-benchmark": "json", "llama-bench-json": "json",
          "llama-bench-jsonl": "jsonl", "llama-bench-csv": "csv", "llama-bench-sql": "sql"}
# Read back by formats.tidy / formats.embedded, which ingest must route these formats to.


def records(version: str) -> list[dict]:
    """The sweep's run records: 4 ok points of 3 repetitions, and one point that failed to load."""
    base = json.loads((DATA / "run_v1.json").read_text())
    base["provenance"]["engine"]["llama_cpp_python"] = version
    out = []
    for i, (n_ctx, temp) in enumerate((c, t) for c in N_CTX for t in TEMPERATURES):
        rec = copy.deepcopy(base)
        rec["run_id"] = hashlib.sha256(f"{version} {i}".encode()).hexdigest()[:32]
        rec["job_name"] = f"runtime.n_ctx={n_ctx},sampling.temperature={temp}"
        rec["config"]["runtime"]["n_ctx"] = n_ctx
        rec["config"]["sampling"]["temperature"] = temp
        rec["effective"].update(n_ctx_requested=n_ctx, n_ctx_effective=n_ctx, effective_id=f"{n_ctx}-{temp}")
        reps = []
        for k in range(3):
            r = copy.deepcopy(base["repetitions"][k % 2])
            slow = 1 + 0.02 * k + 0.05 * i  # each point and repetition its own numbers
            r["rep"] = k
            r["decode_tps"] = r["decode_tps"] * DECODE_SPEED[version] / slow
            r["decode_ms"] = r["decode_ms"] * slow / DECODE_SPEED[version]
            r["prefill_tps"] /= slow
            r["prompt_eval_ms"] *= slow
            r["ttft_ms"] *= slow
            r["e2e_ms"] = r["ttft_ms"] + r["decode_ms"]
            reps.append(r)
        rec["repetitions"] = reps
        out.append(rec)
    failed = copy.deepcopy(out[-1])
    failed.update(run_id=hashlib.sha256(f"{version} failed".encode()).hexdigest()[:32], status="failed",
                  job_name="runtime.n_ctx=8192", repetitions=[],
                  error={"type": "RuntimeError", "message": "failed to create context", "phase": "load"})
    failed["config"]["runtime"]["n_ctx"] = 8192
    failed["effective"].update(n_ctx_requested=8192, n_ctx_effective=8192, effective_id="8192")
    return out + [failed]


def write_sweep(root: Path, version: str) -> Path:
    for rec in records(version):
        write_json(root / rec["job_name"] / "run.json", rec)
    return root


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    return {v: write_sweep(root / f"sweep-{v}", v) for v in COMMITS}


@pytest.fixture(scope="module")
def original(sweeps):
    return pipeline.analyze([sweeps["0.3.36"]])


def export(paths: list[Path], fmt: str, out: Path) -> Path:
    """`harness export PATH... --format FMT --out OUT`, in this process."""
    assert cli.main(["export", *map(str, paths), "--format", fmt, "--out", str(out)]) == 0
    return out


def comparable(configs: pd.DataFrame) -> pd.DataFrame:
    return configs.reset_index(drop=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_then_analyze_gives_the_same_configurations_and_statistics(sweeps, original, fmt, tmp_path):
    path = export([sweeps["0.3.36"]], fmt, tmp_path / f"export.{SUFFIX[fmt]}")
    back = pipeline.analyze([path])
    assert [f.kind for f in back.ingest.files] == [back.ingest.files[0].kind] and back.ingest.files[0].recognised
    # 4 ok points and the failed one, each its own configuration, every statistic equal
    assert len(original.configs) == 5 and list(original.configs["n_failed"]).count(1) == 1
    assert back.varying == original.varying == ["n_ctx", "n_ctx_effective", "temperature"]
    pd.testing.assert_frame_equal(comparable(back.configs), comparable(original.configs), check_exact=True)
    assert len(back.samples) == len(original.samples) == 13


def test_cli_export_then_analyze_of_a_llama_bench_export(sweeps, tmp_path, capsys):
    """The issue's case through the command line's code: a 2x2 sweep exported to llama-bench JSON
    and analysed again keeps its 4 configurations (and the failed fifth), not 2."""
    out = export([sweeps["0.3.36"]], "llama-bench-json", tmp_path / "bench.json")
    assert cli.main(["analyze", str(out), "--out", str(tmp_path / "an")]) == 0
    assert "5 configurations" in capsys.readouterr().out
    got = pd.read_csv(tmp_path / "an" / "configurations.csv")
    assert sorted(zip(got["n_ctx"], got["temperature"])) == sorted(
        [(c, t) for c in N_CTX for t in TEMPERATURES] + [(8192, 0.8)])
    assert got["n_failed"].tolist().count(1) == 1 and set(got["n_samples"]) == {0, 3}


# ------------------------------------------------------------------------------------- compare-llama-bench.py

def compare_script(tmp: Path) -> Path | None:
    """llama.cpp's scripts/compare-llama-bench.py from the source the engine was built from: the
    unpacked llama-cpp-python source setup keeps under the harness cache, else its sdist."""
    version = importlib.metadata.version("llama-cpp-python")
    cache = Path(os.environ.get("HARNESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "harness")
    rel = "vendor/llama.cpp/scripts/compare-llama-bench.py"
    unpacked = cache / "src" / f"llama_cpp_python-{version}-lean" / rel
    if unpacked.is_file():
        return unpacked
    sdist = cache / "sdist" / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        return None
    with tarfile.open(sdist) as tf:
        member = tf.extractfile(f"llama_cpp_python-{version}/{rel}")
        if member is None:
            return None
        out = tmp / "compare-llama-bench.py"
        out.write_bytes(member.read())
    return out


@pytest.fixture(scope="module")
def compare(tmp_path_factory):
    pytest.importorskip("git", reason="GitPython (a test dependency: pip install -e .[test])")
    pytest.importorskip("tabulate", reason="tabulate (a test dependency: pip install -e .[test])")
    tmp = tmp_path_factory.mktemp("compare")
    script = compare_script(tmp)
    if script is None:
        pytest.skip("no llama-cpp-python source under the harness cache (scripts/setup.sh keeps it there)")

    def run(*inputs: Path) -> list[dict]:
        args = [a for p in inputs for a in ("-i", str(p))]
        proc = subprocess.run([sys.executable, str(script), "--tool", "llama-bench", *args, "-b", COMMITS["0.3.36"], "-c", COMMITS["0.3.35"]],
                              capture_output=True, text=True, timeout=120, cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        return pipe_table(proc.stdout)

    return run


def pipe_table(text: str) -> list[dict]:
    """The rows of tabulate's pipe table, as {header: cell}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    header, body = cells[0], [c for c in cells[2:]]
    assert all(len(c) == len(header) for c in body), text
    return [dict(zip(header, c)) for c in body]


def check_table(rows: list[dict]):
    base, new = f"t/s {COMMITS['0.3.36']}", f"t/s {COMMITS['0.3.35']}"
    assert set(rows[0]) >= {"Model", "Test", base, new, "Speedup"}, rows[0]
    # every configuration of the sweep is its own row (4 points x pp and tg), none merged
    assert len(rows) == 8
    models = [r["Model"] for r in rows]
    assert all(m.startswith("gemma3 270M Q4_K_M [") for m in models)  # llama_model_desc, "- Medium" as _M
    assert len(set(models)) == 4
    for c in N_CTX:
        for t in TEMPERATURES:
            label = f"n_ctx={c} temperature={t:g} "
            assert sorted(r["Test"] for r in rows if label in r["Model"]) == ["pp31", "tg7@d31"]
    for r in rows:
        want = 1.2 if r["Test"].startswith("tg") else 1.0  # 0.3.35 decodes 20% faster here
        assert float(r["Speedup"]) == pytest.approx(want, abs=0.01), r
        assert float(r[new]) > 0 and float(r[base]) > 0


@pytest.mark.parametrize("fmt", ["llama-bench-json", "llama-bench-csv"])
def test_compare_llama_bench_reads_two_exports(sweeps, compare, fmt, tmp_path):
    ext = SUFFIX[fmt]
    a = export([sweeps["0.3.36"]], fmt, tmp_path / f"base.{ext}")
    b = export([sweeps["0.3.35"]], fmt, tmp_path / f"new.{ext}")
    check_table(compare(a, b))


def test_compare_llama_bench_reads_one_jsonl_and_a_database_of_our_sql(sweeps, compare, tmp_path):
    both = [sweeps["0.3.36"], sweeps["0.3.35"]]
    check_table(compare(export(both, "llama-bench-jsonl", tmp_path / "both.jsonl")))
    sql = export(both, "llama-bench-sql", tmp_path / "both.sql").read_text()
    db = tmp_path / "llama-bench.sqlite"
    with sqlite3.connect(db) as conn:  # as `sqlite3 llama-bench.sqlite < both.sql` would
        conn.executescript(sql)
    conn.close()
    check_table(compare(db))


def test_llama_bench_export_fields_llama_cpp_reads(sweeps, tmp_path):
    """What compare-llama-bench.py keys and labels on: a short hex build_commit per engine build,
    llama_model_desc() as model_type, and the run's rows in a field it ignores."""
    both = [sweeps["0.3.36"], sweeps["0.3.35"]]
    tests = list(csv.DictReader(io.StringIO(export(both, "llama-bench-csv", tmp_path / "b.csv").read_text())))
    assert {t["build_commit"] for t in tests} == set(COMMITS.values())
    assert all(t["model_type"].startswith("gemma3 270M Q4_K - Medium [n_ctx=") for t in tests)
    assert all(" timing=python]" in t["model_type"] for t in tests)
    assert all(json.loads(t["harness"])["v"] == 1 for t in tests)
