"""Analysis and reports end to end: a real sweep's report, escaping, compare with a planted
slowdown, exports through the CLI, and nothing usable."""

from __future__ import annotations

import json
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_records

pytestmark = pytest.mark.slow

SECTIONS = ("Executive summary", "Data ingestion", "Environment", "Performance analysis", "Noise and drift", "Key findings",
            "Recommendations", "Risks and mitigations", "Workflow summary", "Metrics glossary")


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    """The session's real 2x2 sweep (conftest.tiny_sweep); the report was written at its end."""
    return tiny_sweep.dir, tiny_sweep.result


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.imgs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


def test_sweep_ends_with_a_report_whose_sections_and_figures_exist(sweep):
    sweep_dir, r = sweep
    html_path = sweep_dir / "report" / "report.html"
    assert f"report: {html_path}" in r.stdout
    md = (sweep_dir / "report" / "report.md").read_text()
    for i, title in enumerate(SECTIONS, 1):
        assert f"## {i}. {title}" in md
    figs = sorted(p.name for p in (sweep_dir / "report" / "figures").glob("*.png"))
    assert {"by_n_ctx.png", "by_temperature.png", "ttft_ms_distribution.png", "itl_p99_ms_distribution.png"} <= set(figs)
    for name in figs:
        assert (sweep_dir / "report" / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = _Collect()
    p.feed(html_path.read_text())
    assert p.tags.count("h2") == len(SECTIONS) and "table" in p.tags
    assert len(p.imgs) == len(figs) and all(src.startswith("data:image/png;base64,") for src in p.imgs)
    # The headline numbers come from the analysis: the best decode rate is the max of the table's means.
    import pandas as pd

    configs = pd.read_csv(sweep_dir / "analysis" / "configurations.csv")
    assert len(configs) == 4
    best = configs["decode_tps_mean"].max()
    assert f"Best decode tok/s: {best:.1f}" in md
    assert "*Pareto front: configurations no other beats on every objective" in md
    samples = pd.read_csv(sweep_dir / "analysis" / "runs.csv")
    assert len(samples) == 4 * 3 and set(samples["source_format"]) == {"harness"}


def test_script_in_data_comes_out_escaped(tmp_path, harness_cli):
    data = tmp_path / "data"
    data.mkdir()
    evil = "<script>alert(1)</script>"
    lines = ["prompt,ttft_s,tokens_s,load_s,prompt_eval_s,eval_s,eval_count,response_chars,error"]
    for i in range(4):
        lines.append(f'"{evil} say hi {i % 2}",0.2{i},4{i}.5,1.0,0.1,2.0,80,300,')
    lines.append(f'"{evil}",0,0,0,0,0,0,0,"boom {evil}"')
    (data / "calls.csv").write_text("\n".join(lines) + "\n")
    r = harness_cli("report", str(data), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    p = _Collect()
    p.feed(page)
    assert "script" not in p.tags


def _plant(src: Path, dst: Path, factor: float) -> None:
    """Copy a sweep and scale every decode rate by `factor` (a planted slowdown)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report", "analysis"))
    for run in dst.glob("*/run.json"):
        rec = json.loads(run.read_text())
        for rep in rec["repetitions"]:
            rep["decode_tps"] *= factor
            rep["decode_ms"] /= factor
        run.write_text(json.dumps(rec))


def test_compare_fails_on_a_planted_slowdown(sweep, tmp_path, harness_cli):
    sweep_dir, _ = sweep
    slow = tmp_path / "slow"
    _plant(sweep_dir, slow, 0.25)
    r = harness_cli("compare", str(sweep_dir), str(slow), "--fail-on", "decode_tps:-5%", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    # Every configuration got 75% slower (large enough to stay significant with 3 samples on a
    # busy machine); a point may still miss significance, and only significant changes fail.
    regressions = [ln for ln in r.stdout.splitlines() if ln.startswith("REGRESSION: ")]
    assert 1 <= len(regressions) <= 4 and all("decode_tps" in ln for ln in regressions)
    # The same data against itself: nothing significant, exit 0.
    same = harness_cli("compare", str(sweep_dir), str(sweep_dir), "--fail-on", "decode_tps:-5%", cwd=tmp_path)
    assert same.returncode == 0 and "REGRESSION" not in same.stdout
    assert "no regression beyond the thresholds" in same.stdout
    # A threshold larger than the slowdown passes.
    loose = harness_cli("compare", str(sweep_dir), str(slow), "--fail-on", "decode_tps:-80%", cwd=tmp_path)
    assert loose.returncode == 0
    bad = harness_cli("compare", str(sweep_dir), str(slow), "--fail-on", "decode_tps:fast", cwd=tmp_path)
    assert bad.returncode == 2 and "decode_tps:fast" in bad.stderr


def test_llama_bench_sql_export_loads_into_sqlite(sweep, tmp_path, harness_cli):
    sweep_dir, _ = sweep
    out = tmp_path / "bench.sql"
    r = harness_cli("export", str(sweep_dir), "--format", "llama-bench-sql", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    db = sqlite3.connect(":memory:")
    db.executescript(out.read_text())
    n_tests, = db.execute("SELECT COUNT(*) FROM llama_bench").fetchone()
    assert n_tests == 4 * 2  # a pp and a tg test per configuration
    # ... and the export reads back through our own importer.
    back = harness_cli("analyze", str(out), "--out", str(tmp_path / "an"), cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-2000:]


def test_pytest_benchmark_export_is_readable_by_pytest_benchmark(sweep, tmp_path, harness_cli):
    sweep_dir, _ = sweep
    out = tmp_path / "0001_bench.json"
    r = harness_cli("export", str(sweep_dir), "--format", "pytest-benchmark", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert len(data["benchmarks"]) == 4
    assert all(b["extra_info"]["decode_tps"] > 0 for b in data["benchmarks"])


def test_nothing_usable_is_an_error_and_no_report(tmp_path, harness_cli):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "empty.csv").write_text("")
    (junk / "u16.csv").write_bytes("prompt,ttft_s\n".encode("utf-16"))
    r = harness_cli("report", str(junk), cwd=tmp_path)
    assert r.returncode == 1
    assert "no usable benchmark data" in r.stderr
    assert "empty.csv" in r.stderr and "UTF-16" in r.stderr
    assert not (junk / "report").exists()


def test_golden_foreign_files_analyse_together(tmp_path, harness_cli):
    """Every golden input format in one analysis: recognised, mapped, junk skipped with reasons."""
    data = tmp_path / "all"
    shutil.copytree(ROOT / "tests" / "data" / "ingest", data / "ingest")
    shutil.copytree(ROOT / "tests" / "data" / "llama_bench", data / "llama_bench")
    r = harness_cli("analyze", str(data), "--out", str(tmp_path / "an"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(tmp_path / "an" / "runs.csv")
    assert {"harness", "ollama-calls", "ollama-config-calls", "ollama-api", "pytest-benchmark",
            "llama-bench-json", "llama-bench-csv", "llama-bench-sql", "llama-server", "ollama-verbose",
            "vllm-bench-serve", "guidellm", "aiperf-records", "optimum-benchmark", "csv"} <= set(df["source_format"])
    agg = pd.read_csv(tmp_path / "an" / "aggregates.csv")  # means of requests not listed: never samples
    assert {"ollama-summary", "aiperf", "json", "vllm-bench-serve"} <= set(agg["source_format"])
    assert "junk.sql" in r.stderr or "junk.sql" in r.stdout


CONFIG_CALLS = "num_gpu,num_ctx,temperature,config_name,ttft_s,tokens_s,load_s,prompt_eval_s,eval_s,eval_count,error\n"


def _calls(folder: Path, rows: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "calls.csv").write_text(CONFIG_CALLS + "".join(r + "\n" for r in rows))
    return folder


def test_compare_with_nothing_in_common_fails_the_gate(tmp_path, harness_cli):
    a = _calls(tmp_path / "a", [f"999,2048,0.7,x,0.1,5{i}.0,1.0,0.05,1.6,88," for i in range(3)])
    b = _calls(tmp_path / "b", [f"999,4096,0.7,x,0.1,5{i}.0,1.0,0.05,1.6,88," for i in range(3)])
    r = harness_cli("compare", str(a), str(b), "--fail-on", "decode_tps:-5%", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no regression" not in r.stdout and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "nothing compared" in err[0] and "no configuration in common" in err[0]
    # Matched, but the checked metric was measured on neither side: nothing to check is a failure too.
    same = harness_cli("compare", str(a), str(a), "--fail-on", "decode_tps:-5%", "--fail-on", "e2e_ms:+5%",
                       cwd=tmp_path)
    assert same.returncode == 1 and "Traceback" not in same.stderr
    err = [ln for ln in same.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "e2e_ms" in err[0] and "nothing to check" in err[0]


def test_compare_and_report_print_integers_intervals_and_plurals(tmp_path, harness_cli):
    a = _calls(tmp_path / "a", ["999,256,0.7,x,0.1,50.0,1.0,0.05,1.6,88,", "999,256,0.7,x,0.9,51.0,1.0,0.05,1.6,88,",
                                "999,512,0.7,y,0.2,40.0,1.0,0.05,1.6,88,"])
    r = harness_cli("compare", str(a), str(a), cwd=tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "n_ctx=256" in r.stdout and "256.0" not in r.stdout and "nan" not in r.stdout.lower()
    assert "[n/a]" in r.stdout  # n = 1 at n_ctx=512: no interval, said so
    rep = harness_cli("report", str(a), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "(nan" not in md and "nan-nan" not in md and "256.0" not in md
    assert "| 256 |" in md and " [0, " in md  # TTFT 100 and 900 ms: the interval stops at zero
    one = _calls(tmp_path / "one", ["999,256,0.7,x,0.1,50.0,1.0,0.05,1.6,88,"])
    rep = harness_cli("report", str(one), "--out", str(tmp_path / "rep1"), cwd=tmp_path)
    md = (tmp_path / "rep1" / "report.md").read_text()
    assert "1 configuration," in md and "1 configurations" not in md and "1 samples" not in md


def test_bad_out_paths_are_one_line_errors(tmp_path, harness_cli):
    import os

    data = _calls(tmp_path / "d", ["999,256,0.7,x,0.1,50.0,1.0,0.05,1.6,88,"])
    f = tmp_path / "file.txt"
    f.write_text("x")
    cases = [(("report", str(data), "--out", str(f)), 2, "not a folder"),
             (("export", str(data), "--format", "csv", "--out", str(tmp_path)), 2, "is a folder"),
             (("analyze", str(data), "--out", str(f / "sub")), 2, "not a folder")]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores the mode: /sys refuses new files to everyone
        ro = Path("/sys")
    if not os.access(ro, os.W_OK):
        cases.append((("export", str(data), "--format", "csv", "--out", str(ro / "x.csv")), 1, "cannot write"))
    for args, code, why in cases:
        r = harness_cli(*args, cwd=tmp_path)
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == code, (args, r.stderr)
        assert "Traceback" not in r.stderr and err[-1].startswith("error:") and why in err[-1], (args, r.stderr)
        assert str(args[-1]) in err[-1]
        assert sum(ln.startswith("error:") for ln in err) == 1


def test_extreme_foreign_values_give_no_runtime_warning(tmp_path, harness_cli):
    data = _calls(tmp_path / "x", ["999,2048,0.7,z,0.0,0.0001,0,0,0,1,", "999,2048,0.7,z,0.0,0.0001,0,0,0,1,",
                                   "0,4096,0.7,one,0.3,1e308,1.0,0.1,1.0,50,", "0,8192,0.7,n,nan,nan,nan,nan,nan,nan,",
                                   "0,1024,0.7,big,1e-300,1e6,1.0,0.1,1.0,50,", "0,1024,0.7,big,1e300,2e6,1.0,0.1,1.0,50,"])
    env = {"PYTHONWARNINGS": "error::RuntimeWarning"}
    for args in (("report", str(data), "--out", str(tmp_path / "rep")), ("analyze", str(data), "--out", str(tmp_path / "an")),
                 ("compare", str(data), str(data))):
        r = harness_cli(*args, cwd=tmp_path, env=env)
        assert r.returncode == 0, (args, r.stderr[-3000:])
        assert "Warning" not in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-3000:])
