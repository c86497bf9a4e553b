"""The analysis pipeline: ingest -> tidy table -> configurations, effects, best, Pareto."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


class NothingToAnalyse(RuntimeError):
    """No usable sample was found: no report is made from nothing."""


@dataclass
class Analysis:
    roots: list[Path]
    ingest: object  # ingest.IngestResult
    samples: object  # the tidy sample table (pandas)
    ok: object  # ok samples only
    configs: object  # stats.configurations
    varying: list[str]
    effects: list[dict]
    effect_summary: list[dict]
    best: dict
    pareto: object
    timings: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)  # analysis.noise.assess: drift, trends, noise floor


def analyze(paths: list[str | Path], *, max_file_bytes: int = 200 * 2**20, model_layers: dict | None = None
            ) -> Analysis:
    """Ingest `paths` and compute everything the report and the CLI show (`model_layers`: see
    ingest). Raises NothingToAnalyse (with the ingestion summary) when no ok sample exists;
    pre-aggregated values alone are not samples."""
    from . import best as best_mod
    from . import effects as effects_mod
    from . import noise as noise_mod
    from . import stats
    from .ingest import ingest

    t0 = time.perf_counter()
    result = ingest(list(paths), max_file_bytes=max_file_bytes, model_layers=model_layers)
    t1 = time.perf_counter()
    df = result.frame
    ok = df[df["status"] == "ok"]
    if ok.empty:
        n_agg = len(result.aggregates) if result.aggregates is not None else 0
        err = NothingToAnalyse("no usable benchmark data found" + (
            f" (only {n_agg} pre-aggregated values, which are not samples)" if n_agg else ""))
        err.ingest = result
        raise err
    configs = stats.configurations(df)
    varying = stats.varying_params(df)
    noise = noise_mod.assess(df, [Path(p) for p in paths])
    comparisons = effects_mod.effects(df, drift=noise["floor"])
    summary = effects_mod.effect_summary(comparisons)
    best = best_mod.best(configs)
    front = best_mod.pareto(configs)
    t2 = time.perf_counter()
    return Analysis(roots=[Path(p) for p in paths], ingest=result, samples=df, ok=ok, configs=configs,
                    varying=varying, effects=comparisons, effect_summary=summary, best=best, pareto=front,
                    timings={"ingest_s": t1 - t0, "analysis_s": t2 - t1}, noise=noise)


def shown_params(an: Analysis) -> list[str]:
    """The swept parameters worth showing: an `_effective` twin only where it differs from the
    request somewhere (n_ctx_effective is hidden when it always equals n_ctx)."""
    import pandas as pd

    cols = [p for p in an.varying if p in an.configs.columns]
    out = []
    for p in cols:
        base = p[: -len("_effective")] if p.endswith("_effective") else None
        if base in cols:
            a, b = an.configs[base], an.configs[p]
            same = (a.astype(str) == b.astype(str)) | (pd.to_numeric(a, errors="coerce") == pd.to_numeric(b, errors="coerce"))
            if same.all():
                continue
        out.append(p)
    return out
