"""Hydra callbacks: keep the sweep-level files (sweep.json, runs.csv, runs.parquet) current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# The sweep folder and rows of the last index rebuilt in this process (for the CLI's summary).
LAST: dict = {"sweep_dir": None, "rows": []}


class SweepIndex(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from . import sweepindex

        d = Path(config.hydra.sweep.dir)
        d.mkdir(parents=True, exist_ok=True)
        sweepindex.mark_started(d, list(config.hydra.overrides.task))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from . import sweepindex

        d = Path(config.hydra.sweep.dir)
        LAST.update(sweep_dir=d, rows=sweepindex.rebuild(d))

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from . import sweepindex

        d = Path(HydraConfig.get().runtime.output_dir).parent
        LAST.update(sweep_dir=d, rows=sweepindex.rebuild(d))
