"""Our own tidy-table exports read back: `harness export --format csv | parquet` write the sample
table (`table.COLUMNS`) as it is; these turn such a file into the same rows again.

A CSV is ours when every header name is a tidy column and run_id, status and at least one metric
are among them (a file written before a column was added still reads; the missing column is
missing). pandas writes each float as its shortest repr and reads it back exactly, so statistics come
back bit for bit (tests/unit/test_export.py).
"""

from __future__ import annotations

import io

from .. import table

#: Columns a tidy export always has.
REQUIRED = ("run_id", "status")
PARQUET_MAGIC = b"PAR1"
_DTYPES = {"str": "string", "float": "float64", "int": "Int64", "bool": "boolean"}


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


def csv_rows(text: str, source_file: str) -> list[dict]:
    """Tidy rows of a CSV written by `harness export --format csv`."""
    import pandas as pd

    header = pd.read_csv(io.StringIO(text), nrows=0).columns
    dtypes = {c: _DTYPES[table.BY_NAME[c].dtype] for c in header if c in table.BY_NAME}
    df = pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False,
                     na_values=[""])
    return _rows(df, "harness-csv", source_file)


def parquet_rows(data: bytes, source_file: str) -> list[dict]:
    """Tidy rows of a Parquet file written by `harness export --format parquet`."""
    import pandas as pd

    return _rows(pd.read_parquet(io.BytesIO(data), engine="pyarrow"), "harness-parquet", source_file)
