"""From an analysis to files: the tidy tables (analysis/) and the report (report.md, report.html,
figures/). `harness analyze`, `harness report`, `harness agent` and the end of `harness run -m`
all write through here, so they lay out the same files the same way."""

from __future__ import annotations

import io
from pathlib import Path

from ..store import atomic_write_bytes, atomic_write_text
from . import build


def analysis_dir(report_dir: Path) -> Path:
    """Where the tables of a report go: next to a folder named `report` (results/s/report ->
    results/s/analysis), else inside it (out/analysis)."""
    return report_dir.parent / "analysis" if report_dir.name == "report" else report_dir / "analysis"


def write_tables(an, out: Path) -> None:
    """runs.csv / runs.parquet (the tidy sample table), configurations.csv and, when files held
    pre-aggregated values, aggregates.csv into `out`. Arrow
    writes the large table: pandas' CSV writer takes ~2 s for 50,000 rows, Arrow's ~0.2 s.
    Raises OSError naming the path that could not be written."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(an.samples, preserve_index=False)
    for name, writer in (("runs.csv", pa_csv.write_csv), ("runs.parquet", pq.write_table)):
        buf = io.BytesIO()
        writer(table, buf)
        atomic_write_bytes(out / name, buf.getvalue())
    atomic_write_text(out / "configurations.csv", an.configs.to_csv(index=False))
    agg = getattr(an.ingest, "aggregates", None)
    if agg is not None and len(agg):  # values files claim about requests they do not list: not samples
        atomic_write_text(out / "aggregates.csv", agg.to_csv(index=False))


def write_report(an, out: Path, narrative=None) -> dict:
    """The tables (analysis_dir(out)) and the report in `out`, with the narrative section when
    `narrative` (an agent.narrative.AgentResult) is given. Returns build.write's paths and
    timings; raises OSError naming the path that could not be written."""
    write_tables(an, analysis_dir(out))
    return build.write(an, out, narrative=narrative)


def out_problem(path: Path, want: str) -> str | None:
    """Why `path` cannot be the output `want` ("folder" or "file") before anything is written:
    it exists as the other kind, or a folder on its way is a file. None when it can (whether it is
    writable shows when writing)."""
    p = Path(path)
    if want == "folder" and p.exists() and not p.is_dir():
        return "exists and is not a folder"
    if want == "file" and p.is_dir():
        return "is a folder (give a file name)"
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a folder"
            break
    return None


def cannot_write(e: OSError) -> str:
    """The one `error:` line for an output that could not be written (the CLI exits 1)."""
    return f"error: cannot write {e.filename or 'the output'}: {e.strerror or e}"
