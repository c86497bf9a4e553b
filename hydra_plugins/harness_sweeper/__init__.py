"""Hydra's basic sweeper with a pre-flight: every point of the sweep is composed, validated and
planned (model file found and readable, effective parameters known) before the first job runs.
A bad value stops the whole sweep with one line and exit code 2, before any model loads."""

from __future__ import annotations

import sys
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class HarnessSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from harness import engine, progress
        from harness.config import ConfigError
        from harness.runner import composed_to_dict, preflight

        loader = self.hydra_context.config_loader
        gpu = engine.gpu_offload_supported()
        for overrides in batch:
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                preflight(composed_to_dict(cfg), gpu_offload_supported=gpu)
            except ConfigError as e:
                where = " ".join(overrides)
                print(f"error: {e}" + (f"  (sweep point: {where})" if where else ""), file=sys.stderr)
                sys.exit(2)
        progress.start(len(batch))

    def sweep(self, arguments: list[str]) -> Any:
        from harness import progress

        try:
            return super().sweep(arguments)
        finally:
            progress.stop()
