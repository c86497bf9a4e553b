"""`harness analyze | report | compare | export`: thin argument handling around the analysis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser(prog: str, desc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"harness {prog}", description=desc)


def _max_bytes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-file-mb", type=float, default=200.0,
                   help="skip files larger than this (MiB), with a reason (default 200)")


def _analyze(paths, max_file_mb):
    from .analysis.pipeline import NothingToAnalyse, analyze

    try:
        return analyze(paths, max_file_bytes=int(max_file_mb * 2**20))
    except NothingToAnalyse as e:
        _print_ingest(e.ingest)
        print("error: no usable benchmark data found in " + ", ".join(str(p) for p in paths)
              + ": no report from nothing", file=sys.stderr)
        return None


def _print_ingest(result) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(stderr=True)
    summ = result.summary()
    t = Table(title="ingestion", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in summ.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)):
                    t.add_row(f"{k}: {k2}", str(v2))
        elif not isinstance(v, list):
            t.add_row(k, str(v))
    con.print(t)
    for f in [f for f in result.files if f.reason and f.reason != "derived harness file"][:20]:
        con.print(f"  skipped {f.path}: {f.reason}")


def _load(prog: str, desc: str, args: list[str], out_name: str, extra=None):
    """Parse PATH... [--out] [--max-file-mb] (+ extra options) and analyse. Returns (args, analysis
    or None when nothing usable was found, output folder)."""
    p = _parser(prog, desc)
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help=f"output (default: PATH/{out_name} for one folder)")
    if extra:
        extra(p)
    _max_bytes(p)
    a = p.parse_args(args)
    out = a.out or (a.paths[0] / out_name if a.paths[0].is_dir() else Path(out_name))
    return a, _analyze(a.paths, a.max_file_mb), out


def cmd_analyze(args: list[str]) -> int:
    a, an, out = _load("analyze", "Ingest result folders and benchmark files; write the tidy table and "
                       "statistics.", args, "analysis")
    if an is None:
        return 1
    write_tables(an, out)
    _print_ingest(an.ingest)
    _print_configs(an)
    print(f"analysis: {out}")
    return 0


def write_tables(an, out: Path) -> None:
    """runs.csv / runs.parquet (the tidy sample table) and configurations.csv. Arrow writes the
    large table: pandas' CSV writer takes ~2 s for 50,000 rows, Arrow's ~0.2 s."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from .store import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(an.samples, preserve_index=False)
    for name, writer in (("runs.csv", pa_csv.write_csv), ("runs.parquet", pq.write_table)):
        buf = io.BytesIO()
        writer(table, buf)
        atomic_write_bytes(out / name, buf.getvalue())
    atomic_write_text(out / "configurations.csv", an.configs.to_csv(index=False))


def _print_configs(an) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report.build import _ci, _num, _val

    from .report.build import shown_params

    t = Table(title=f"{len(an.configs)} configurations", title_justify="left")
    cols = shown_params(an)
    for c in cols + ["n", "decode tok/s (95% CI)", "TTFT ms (95% CI)", "noisy"]:
        t.add_column(c, justify="right")
    for row in an.configs.to_dict("records"):
        t.add_row(*[_num(_val(row, c)) for c in cols], _num(_val(row, "n_samples")), _ci(row, "decode_tps"),
                  _ci(row, "ttft_ms"), "yes" if _val(row, "noisy") else "")
    Console(width=160).print(t)


def write_report(paths: list[Path], out: Path, max_file_mb: float = 200.0, narrative: str = "none") -> dict:
    """Analyse `paths` and write the report into `out`; narrative="llm" adds the section written
    by the local model with the agent's default config (its run goes to out/agent)."""
    from .analysis.pipeline import analyze
    from .report.build import write

    an = analyze(paths, max_file_bytes=int(max_file_mb * 2**20))
    write_tables(an, out.parent / "analysis" if out.name == "report" else out / "analysis")
    if narrative != "llm":
        return write(an, out)
    from .agent.cli import narrate, summarize
    from .agent.narrative import prepare

    result = narrate(an, out, prepare([]))
    paths_out = write(an, out, narrative=result)
    summarize(result)
    return paths_out


def cmd_report(args: list[str]) -> int:
    from .agent.cli import narrative_mode, run, split_overrides
    from .config import ConfigError

    args, overrides = split_overrides(args)
    try:
        mode, args, overrides = narrative_mode(args, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if mode == "llm":  # the narrative written by the local model: see harness/agent
        return run(args, overrides, prog="report")
    if overrides:
        print(f"error: {overrides[0]}: config overrides apply only with report.narrative=llm", file=sys.stderr)
        return 2
    a, an, out = _load("report", "Analyse and write report.md, report.html (self-contained) and figures/.",
                       args, "report")
    if an is None:
        return 1
    from .report.build import write

    write_tables(an, out.parent / "analysis" if out.name == "report" else out / "analysis")
    paths = write(an, out)
    print(f"report: {paths['markdown']}")
    print(f"report: {paths['html']}")
    return 0


def cmd_compare(args: list[str]) -> int:
    p = _parser("compare", "Compare result set B against A: ratio B/A per configuration and metric.")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC:+-N%",
                   help="exit 1 when a significant change passes this threshold, e.g. decode_tps:-5%% or ttft_ms:+10%%")
    _max_bytes(p)
    a = p.parse_args(args)
    from .analysis.compare import compare, parse_check, regressions

    try:
        checks = [parse_check(s) for s in a.fail_on]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    an_a, an_b = _analyze([a.a], a.max_file_mb), _analyze([a.b], a.max_file_mb)
    if an_a is None or an_b is None:
        return 2
    result = compare(an_a.samples, an_b.samples)
    _print_comparisons(result.rows)
    for side, items in (("A", result.unmatched_a), ("B", result.unmatched_b)):
        for u in items:
            print(f"only in {side}: {u['label']}")
    failures = regressions(result.rows, checks)
    for msg in failures:
        print(f"REGRESSION: {msg}")
    if checks and not failures:
        print("no regression beyond the thresholds")
    return 1 if failures else 0


def _print_comparisons(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="B / A", title_justify="left")
    for c in ("configuration", "metric", "A", "B", "B/A (95% CI)", "p", "verdict"):
        t.add_column(c, justify="right")
    for r in rows:
        lo, hi = r.get("ratio_ci95_low"), r.get("ratio_ci95_high")
        verdict = r.get("direction", "") if r.get("significant") else "not significant"
        ratio = r.get("ratio")
        t.add_row(str(r.get("label", ""))[:60], r["metric"], f"{r['mean_a']:.4g}", f"{r['mean_b']:.4g}",
                  "-" if ratio is None else (f"{ratio:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None and hi is not None
                                             else f"{ratio:.3f}"),
                  "-" if r.get("p_value") is None else f"{r['p_value']:.3g}", verdict)
    Console(width=160).print(t)


def cmd_export(args: list[str]) -> int:
    from .export import FORMATS, export

    a, an, _ = _load("export", "Export the tidy sample table of PATH in another format.", args, "export",
                     extra=lambda p: p.add_argument("--format", required=True, choices=FORMATS))
    if an is None:
        return 1
    data = export(an.samples, a.format)
    if a.out:
        from .store import atomic_write_bytes

        atomic_write_bytes(a.out, data if isinstance(data, bytes) else data.encode("utf-8"))
        print(f"export: {a.out}")
    elif isinstance(data, bytes):
        print("error: --out is required for binary formats", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(data)
    return 0
