"""Hydra callbacks: a pre-flight over every point of a sweep, and the sweep-level files
(sweep.json, runs.csv, runs.parquet) kept current from the job folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

# The sweep folder and rows of the last index rebuilt in this process (for the CLI's summary).
LAST: dict = {"sweep_dir": None, "rows": []}


def sweep_points(config: Any) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch, in launch order (for a
    single run: its one override list)."""
    from hydra.types import RunMode

    if config.hydra.mode == RunMode.RUN:
        return [list(config.hydra.overrides.task)]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def preflight_sweep(config: Any) -> int:
    """Compose, validate and plan every point before the first model loads. A bad value prints
    one line naming the key, the value and what is allowed, and exits with code 2."""
    from hydra import compose

    from . import engine
    from .config import ConfigError
    from .hydra_conf import to_plain
    from .runner import preflight

    points = sweep_points(config)
    common = set.intersection(*(set(p) for p in points)) if points else set()
    gpu = engine.gpu_offload_supported()
    for job in points:
        cfg = compose(config_name=config.hydra.job.config_name, overrides=job)
        try:
            preflight(to_plain(cfg), gpu_offload_supported=gpu)
        except ConfigError as e:
            varying = [o for o in job if o not in common]  # what tells this point from the others
            print(f"error: {e}" + (f"  (sweep point: {' '.join(varying)})" if varying else ""), file=sys.stderr)
            sys.exit(2)
    return len(points)


def _tally() -> dict:
    from .runner import TALLY

    return dict(TALLY)


class SweepIndex(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from . import progress, sweepindex

        n = preflight_sweep(config)
        d = Path(config.hydra.sweep.dir)
        d.mkdir(parents=True, exist_ok=True)
        sweepindex.mark_started(d, list(config.hydra.overrides.task))
        LAST["sweep_dir"] = d  # known from now on, so an interrupt can mark the sweep
        progress.start(n)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from . import progress, sweepindex

        progress.stop()
        d = Path(config.hydra.sweep.dir)
        LAST.update(sweep_dir=d, rows=sweepindex.rebuild(d, last_invocation=_tally()),
                    report_auto=bool(config.get("report", {}).get("auto", False)))

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from . import sweepindex

        preflight_sweep(config)
        d = Path(config.hydra.run.dir).parent
        d.mkdir(parents=True, exist_ok=True)
        sweepindex.mark_started(d, list(config.hydra.overrides.task))
        LAST["sweep_dir"] = d

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        from . import sweepindex

        d = Path(config.hydra.run.dir).parent
        LAST.update(sweep_dir=d, rows=sweepindex.rebuild(d, last_invocation=_tally()))
