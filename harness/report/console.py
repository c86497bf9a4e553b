"""The analysis in the terminal: ingestion summary, configurations, comparisons. Tables fit the
terminal (the `COLUMNS` environment variable, else the terminal's width, else `default`)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from . import format as fmt


def width(default: int = 160) -> int:
    """Columns to print into: $COLUMNS when set, else the terminal's width, else `default`."""
    return shutil.get_terminal_size((default, 24)).columns


def console(stderr: bool = False, default: int = 160):
    """A rich Console of `width(default)` columns."""
    from rich.console import Console

    return Console(stderr=stderr, width=width(default))


def print_ingest(result) -> None:
    """The ingestion summary (counts, skipped files with the reason) on stderr."""
    from rich.markup import escape
    from rich.table import Table

    con = console(stderr=True)
    t = Table(title="ingestion", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in result.summary().items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)):
                    t.add_row(escape(f"{k}: {k2}"), escape(str(v2)))
        elif not isinstance(v, list):
            t.add_row(escape(str(k)), escape(str(v)))
    con.print(t)
    for f in [f for f in result.files if f.reason and f.reason != "derived harness file"][:20]:
        con.print(escape(f"  skipped {f.path}: {f.reason}"), soft_wrap=True)
    for f in [f for f in result.files if f.recognised and f.note][:20]:
        con.print(escape(f"  {f.path} ({f.kind}): {f.note}"), soft_wrap=True)
    for w in result.warnings[:20]:
        con.print(escape(f"  rejected: {w}"), soft_wrap=True)
    for line in getattr(result, "offload", None) or ():
        con.print(escape(f"  offload: {line}"), soft_wrap=True)
    print_aggregates(result)


def print_aggregates(result) -> None:
    """The aggregates table (values files claim about requests they do not list) on stderr."""
    from rich.markup import escape
    from rich.table import Table

    from .aggregates import rows

    headers, body = rows(getattr(result, "aggregates", None), limit=40)
    if not body:
        return
    t = Table(title="aggregates (claimed by the files; not samples, never pooled)", title_justify="left")
    for h in headers:
        t.add_column(escape(h))
    for r in body:
        t.add_row(*[escape(c) for c in r])
    console(stderr=True).print(t)


def analyze_or_explain(paths: list[Path], max_file_mb: float, model_layers: dict | None = None):
    """analysis.pipeline.analyze(paths), or None after printing the ingestion summary and one
    `error:` line when nothing usable was found."""
    from ..analysis.pipeline import NothingToAnalyse, analyze

    try:
        return analyze(paths, max_file_bytes=int(max_file_mb * 2**20), model_layers=model_layers)
    except NothingToAnalyse as e:
        print_ingest(e.ingest)
        n_agg = len(e.ingest.aggregates) if getattr(e.ingest, "aggregates", None) is not None else 0
        print("error: no usable benchmark data found in " + ", ".join(str(p) for p in paths)
              + (f" (only {n_agg} pre-aggregated values, shown above: not samples)" if n_agg else "")
              + ": no report from nothing", file=sys.stderr)
        return None


def print_configs(an) -> None:
    """One line per configuration: the model when several were measured or any is a performance
    twin ('NAME (twin)'), the varying parameters, n, decode tok/s and TTFT with CIs."""
    from rich.markup import escape
    from rich.table import Table

    from ..analysis.pipeline import shown_params
    from .variants import label_columns

    t = Table(title=fmt.plural(len(an.configs), "configuration"), title_justify="left")
    cols = label_columns(an) + shown_params(an)  # the model too (a twin's marked) when it tells rows apart
    for c in cols + ["n", "decode tok/s [95% CI]", "TTFT ms [95% CI]", "noisy"]:
        t.add_column(escape(c), justify="right")
    for row in an.configs.to_dict("records"):
        cells = [fmt.param(fmt.value(row, c)) for c in cols] + [
            fmt.num(fmt.value(row, "n_samples")), fmt.ci(row, "decode_tps"), fmt.ci(row, "ttft_ms"),
            "yes" if fmt.value(row, "noisy") else ""]
        t.add_row(*[escape(c) for c in cells])  # "[n/a]" is text, not rich markup
    console().print(t)


def print_comparisons(rows) -> None:
    """The B/A table of harness compare: means, ratio with its 95% CI, p, verdict."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="B / A", title_justify="left")
    for c in ("configuration", "metric", "A", "B", "B/A [95% CI]", "p", "verdict"):
        t.add_column(c, justify="right")
    for r in rows:
        verdict = r.get("direction", "") if r.get("significant") else "not significant"
        p = r.get("p_value")
        ratio_txt = fmt.estimate(fmt.value(r, "ratio"), fmt.value(r, "ratio_ci95_low"),
                                 fmt.value(r, "ratio_ci95_high"), ".3f")
        cells = (str(r.get("label", ""))[:60], r["metric"], _g(r.get("mean_a")), _g(r.get("mean_b")), ratio_txt,
                 fmt.NO_CI if fmt.value(r, "p_value") is None else f"{p:.3g}", verdict)
        t.add_row(*[escape(c) for c in cells])  # "[n/a]" is text, not rich markup
    console().print(t)


def _g(x) -> str:
    return fmt.MISSING if fmt.value({"x": x}, "x") is None else f"{x:.4g}"
