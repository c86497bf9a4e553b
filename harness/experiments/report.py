"""An experiment's folder: experiment.json (raw measurements + summary), a CSV table, and
report.md + report.html rendered from one report Document. Every file is written atomically."""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Sequence

from .. import store
from ..report import html, markdown
from ..report.document import Document

RAW_FILE = "experiment.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def new_folder(results_dir: str, name: str) -> Path:
    """`<results_dir>/<name>-<YYYYmmdd-HHMMSS>`, with a suffix when that exists already."""
    base = Path(results_dir) / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    out.mkdir(parents=True)
    return out


def plain(x):
    """JSON-safe data: NaN and infinities become null (the JSON is strict), tuples lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return plain(x.item())
    return x


def write(out_dir: Path, raw: dict, table_name: str, header: Sequence[str], rows: Sequence[Sequence],
          doc: Document) -> dict[str, Path]:
    """Write the folder; returns the paths written by kind (json, csv, md, html)."""
    paths = {"json": out_dir / RAW_FILE, "csv": out_dir / table_name,
             "md": out_dir / REPORT_MD, "html": out_dir / REPORT_HTML}
    store.write_csv(paths["csv"], header, [[_csv(v) for v in r] for r in rows])
    store.atomic_write_text(paths["md"], markdown.render(doc))
    store.atomic_write_text(paths["html"], html.render(doc, out_dir))
    store.write_json(paths["json"], plain(raw))  # last: a folder with experiment.json is complete
    return paths


def _csv(v):
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    return "" if v is None else v


def fmt(x, digits: int = 3) -> str:
    """A number for a table cell: 3 significant digits, '-' when missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:.0f}"


def ci(lo, hi) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) else "-"


def machine_load() -> dict:
    """The host's load average and CPU count, to judge how noisy the timings are."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {}
    return {"loadavg_1m": one, "loadavg_5m": five, "loadavg_15m": fifteen, "cpu_count": os.cpu_count()}
