"""Our own tidy-table exports read back: `harness export --format csv | parquet` write the sample
table (`table.COLUMNS`) as it is; these turn such a file into the same rows again.

A CSV is ours when every header name is a tidy column and run_id, status and at least one metric
are among them (a file written before a column was added still reads; the missing column is
missing). pandas writes each float as its shortest repr, which float() reads back exactly, so
statistics come back bit for bit (tests/unit/test_export.py). `csv_row` types one record of a
csv.DictReader, for a reader that streams the file.
"""

from __future__ import annotations

import csv
import io

from .. import table

#: Columns a tidy export always has.
REQUIRED = ("run_id", "status")
PARQUET_MAGIC = b"PAR1"


def sniff_csv_header(header) -> bool:
    """True when a CSV header (a list of names) is that of our tidy export."""
    names = [h.strip() for h in header]
    return (bool(names) and len(set(names)) == len(names) and set(names) <= set(table.NAMES)
            and set(REQUIRED) <= set(names) and any(n in table.METRICS for n in names))


def is_parquet(data: bytes) -> bool:
    return data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC


def _rows(df, fmt: str, source_file: str) -> list[dict]:
    unknown = [c for c in df.columns if c not in table.BY_NAME]
    if unknown or not set(REQUIRED) <= set(df.columns):
        raise ValueError(f"{fmt}: not a tidy sample table (unknown columns {unknown[:5]}, or no run_id/status)")
    df = df.astype(object).where(df.notna(), None)
    base = table.empty_row()
    return [base | rec | {"source_format": fmt, "source_file": source_file}
            for rec in df.to_dict("records")]


def _typed(name: str, text: str):
    """One CSV cell as its column's type: "" is missing; floats parse back exactly from the
    shortest repr pandas writes."""
    if text == "":
        return None
    kind = table.BY_NAME[name].dtype
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(float(text))
    if kind == "bool":
        low = text.strip().lower()
        if low not in ("true", "false"):
            raise ValueError(f"harness-csv: {name} must be True or False, got {text!r}")
        return low == "true"
    return text


def csv_row(rec: dict, source_file: str) -> dict:
    """The tidy row of one record of csv.DictReader over our CSV export (for streamed reading)."""
    unknown = [k for k in rec if k not in table.BY_NAME]
    if unknown:
        raise ValueError(f"harness-csv: unknown columns {unknown[:5]}")
    return table.empty_row() | {k: _typed(k, v if v is not None else "") for k, v in rec.items()} | {
        "source_format": "harness-csv", "source_file": source_file}


def csv_rows(text: str, source_file: str) -> list[dict]:
    """Tidy rows of a CSV written by `harness export --format csv`."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    if not sniff_csv_header(reader.fieldnames or []):
        raise ValueError("harness-csv: not the header of a tidy sample table")
    return [csv_row(rec, source_file) for rec in reader]


def parquet_rows(data: bytes, source_file: str) -> list[dict]:
    """Tidy rows of a Parquet file written by `harness export --format parquet`."""
    import pandas as pd

    return _rows(pd.read_parquet(io.BytesIO(data), engine="pyarrow"), "harness-parquet", source_file)
