"""Imports made while the engine worker runs a warm-up.

The statistics, the sweep index and the report need scipy.special, pandas, pyarrow and matplotlib
(about a second of imports on a small machine), and the sweep process would import them after its
points. During a warm-up it only waits for the worker, whose result is discarded, so it imports
them then (Point.warmup). Never during a load or a timed repetition: on a machine with few cores
the imports would compete with what is measured. A module already imported costs a dictionary
lookup, so later warm-ups pay nothing.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterable


def _pyplot() -> None:
    from .report.figures import pyplot

    pyplot()  # the report's own setup: the Agg backend, matplotlib's INFO lines kept quiet


STATISTICS = ("scipy.special",)
SWEEP_INDEX = ("pandas", "pyarrow.parquet")
REPORT: tuple = ("harness.analysis_cli", _pyplot)


def imports(items: Iterable[str | Callable[[], object]]) -> None:
    """Import `items` (module names, or functions that import). Errors are left to the code that
    imports the module itself."""
    for item in items:
        try:
            item() if callable(item) else importlib.import_module(item)
        except Exception:  # noqa: BLE001 - imported again where it is needed, which reports it
            pass
