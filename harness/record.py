"""RunRecord: the content of run.json (schema version 1; results/schema/run.schema.json).

Raw per-repetition values are the source of truth; `aggregates` is derived from them and can be
recomputed with `RunRecord.recompute_aggregates()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .metrics import RepMetrics, aggregate

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class RunError:
    type: str
    message: str
    phase: str  # plan | load | prompt | warmup | measure | write

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Repetition:
    metrics: RepMetrics
    seed: int
    t_prefill_end_ms: float | None  # after the last prompt llama_decode returned, from t_request
    engine_eval_ms: float | None  # llama.cpp's own decode time (llama_perf_context)
    engine_n_eval: int | None
    itl_ms: tuple[float, ...]
    round: int | None = None  # the sweep round it was measured in (harness.schedule); None: not scheduled
    order: int | None = None  # its place in the execution order of the invocation that measured it

    def to_dict(self) -> dict:
        d = self.metrics.to_dict()
        d.update(seed=self.seed, t_prefill_end_ms=self.t_prefill_end_ms, engine_eval_ms=self.engine_eval_ms,
                 engine_n_eval=self.engine_n_eval, itl_ms=list(self.itl_ms))
        if self.order is not None:  # scheduled in rounds (harness run -m); absent otherwise
            d.update(round=self.round, order=self.order)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Repetition":
        return cls(metrics=RepMetrics.from_dict(d), seed=d["seed"], t_prefill_end_ms=d.get("t_prefill_end_ms"),
                   engine_eval_ms=d.get("engine_eval_ms"), engine_n_eval=d.get("engine_n_eval"),
                   itl_ms=tuple(d.get("itl_ms") or ()), round=d.get("round"), order=d.get("order"))


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    sweep_name: str
    job_name: str
    status: str
    started_at: str
    ended_at: str
    overrides: tuple[str, ...]
    config: dict
    effective: dict = field(default_factory=dict)
    equivalent_to: tuple[str, ...] = ()
    load: dict = field(default_factory=dict)
    prompt: dict = field(default_factory=dict)
    timing_path: str = "python"
    warmup_done: int = 0
    repetitions: tuple[Repetition, ...] = ()
    aggregates: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    telemetry: dict = field(default_factory=dict)
    roofline: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    error: RunError | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name == "schema_version":
                continue
            v = getattr(self, f.name)
            if f.name == "repetitions":
                v = [r.to_dict() for r in v]
            elif f.name == "error":
                v = v.to_dict() if v else None
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported run.json schema_version {d.get('schema_version')!r} "
                             f"(this harness reads {SCHEMA_VERSION})")
        kw = {f.name: d.get(f.name) for f in fields(cls) if f.name in d}
        kw["repetitions"] = tuple(Repetition.from_dict(r) for r in d.get("repetitions") or ())
        kw["error"] = RunError(**d["error"]) if d.get("error") else None
        for name in ("overrides", "equivalent_to", "warnings"):
            kw[name] = tuple(d.get(name) or ())
        return cls(**kw)

    def recompute_aggregates(self) -> dict:
        reps = [r.metrics for r in self.repetitions]
        return aggregate(reps, [r.itl_ms for r in self.repetitions]) if reps else {}
