"""How long `harness report` takes on a large result folder: analysis + report of synthetic sweeps.

`pytest benchmarks/test_analysis_speed.py -s`. The sweeps come from make_synthetic_runs.py (10,000
and 1,000 runs of 5 repetitions, about 2% failed, a third with GPU telemetry), written once per
module into a temporary folder. Each benchmark times ONE cold analysis + report (ingest -> tidy
table -> configurations / effects / best / Pareto -> figures, report.md, report.html): the target
for 10,000 runs is at most 10 s; it is reported, not asserted. extra_info holds the seconds of
each stage (ingest, analysis, report) and the sizes. Libraries (pandas, scipy, matplotlib) are
imported before the timed round, so both sizes measure the same work; for 10,000 runs the whole
`python -m harness report` command in a fresh process (imports included) is timed as well.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _generator():
    spec = importlib.util.spec_from_file_location("make_synthetic_runs", HERE / "make_synthetic_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _generator()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """n_runs -> (sweep folder, what was written); each size is generated once, when first asked."""
    made: dict[int, tuple[Path, dict]] = {}

    def get(n_runs: int) -> tuple[Path, dict]:
        if n_runs not in made:
            t0 = time.perf_counter()
            sweep, info = gen.write_runs(tmp_path_factory.mktemp(f"runs{n_runs}"), n_runs, seed=0)
            info["generate_s"] = time.perf_counter() - t0
            examples = list(info["examples"].values())
            gen.validate(examples)  # the synthetic records are valid run.json files
            gen.check_aggregates(examples)  # and their aggregates are what the harness computes
            made[n_runs] = sweep, info
        return made[n_runs]

    # Import what the analysis and the report use outside the timed rounds.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401

    import harness.analysis.best  # noqa: F401
    import harness.analysis.effects  # noqa: F401
    import harness.analysis.ingest  # noqa: F401
    import harness.analysis.stats  # noqa: F401
    import harness.report.html  # noqa: F401
    import harness.report.markdown  # noqa: F401

    return get


@pytest.mark.parametrize("n_runs", [10_000, 1_000], ids=["10k_runs", "1k_runs"])
def test_analysis_and_report(benchmark, sweeps, tmp_path, n_runs):
    from harness.analysis.pipeline import analyze
    from harness.report.build import write

    sweep, info = sweeps(n_runs)
    out = tmp_path / "report"
    walls: dict[str, float] = {}

    def analysis_and_report():
        t0 = time.perf_counter()
        an = analyze([sweep])
        t1 = time.perf_counter()
        paths = write(an, out)
        walls.update(analyze_s=t1 - t0, write_s=time.perf_counter() - t1, total_s=time.perf_counter() - t0)
        return an, paths

    an, paths = benchmark.pedantic(analysis_and_report, rounds=1, iterations=1, warmup_rounds=0)

    # The report exists and the analysis saw every run, ok and failed samples as written.
    assert paths["markdown"].is_file() and paths["markdown"].stat().st_size > 0
    assert paths["html"].is_file() and paths["html"].stat().st_size > 0
    figures = sorted(paths["figures"].glob("*.png"))
    assert figures
    s = an.samples
    summ = an.ingest.summary()
    assert summ["by_kind"] == {"harness": n_runs}
    assert s["run_id"].nunique() == n_runs == info["runs"]
    assert int((s["status"] == "ok").sum()) == info["ok_samples"]
    assert int((s["status"] == "failed").sum()) == info["failed_samples"] == info["failed_runs"]
    assert s.loc[s["status"] == "failed", "run_id"].nunique() == info["failed_runs"]
    assert s["energy_per_token_j"].notna().any()  # the telemetry runs reached the table

    tim = paths["timings"]
    stages = {"ingest_s": an.timings["ingest_s"], "analysis_s": an.timings["analysis_s"],
              "report_s": tim["report_s"]}
    x = benchmark.extra_info
    x.update(n_runs=n_runs, n_samples=len(s), ok_samples=info["ok_samples"], failed_samples=info["failed_samples"],
             telemetry_runs=info["telemetry_runs"], n_configurations=len(an.configs), varying=an.varying,
             n_figures=len(figures), **stages, analyze_wall_s=walls["analyze_s"], write_wall_s=walls["write_s"],
             total_s=walls["total_s"], generate_s=info["generate_s"], target_s=10.0 if n_runs == 10_000 else None)
    x["unaccounted_s"] = walls["total_s"] - sum(stages.values())

    cli = None
    if n_runs == 10_000:
        # The command a user runs, in a fresh process: imports and the console output included.
        cli_out = tmp_path / "cli_report"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness", "report", str(sweep), "--out", str(cli_out)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        cli = time.perf_counter() - t0
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert (cli_out / "report.html").is_file()
        x["cli_report_wall_s"] = cli

    print()
    print(f"{n_runs} runs ({len(s)} samples: {info['ok_samples']} ok, {info['failed_samples']} failed; "
          f"{len(an.configs)} configurations; {len(figures)} figures; generated in {info['generate_s']:.1f} s)")
    print(f"  analysis + report: {walls['total_s']:.2f} s = ingest {stages['ingest_s']:.2f} s + analysis "
          f"{stages['analysis_s']:.2f} s + report {stages['report_s']:.2f} s "
          f"(+ {x['unaccounted_s']:.2f} s outside the stages: writing report.md / report.html)")
    if cli is not None:
        print(f"  `python -m harness report` in a fresh process: {cli:.2f} s")
        print(f"  target <= 10 s: {'met' if walls['total_s'] <= 10 else 'NOT met'} in process, "
              f"{'met' if cli <= 10 else 'NOT met'} for the command")
