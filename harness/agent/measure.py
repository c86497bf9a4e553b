"""One measured generation whose prompt is built after the model is loaded, recorded as a run.

The narrative's prompt depends on the loaded model (the facts table is cut to fit its context,
counted with its tokenizer), so it cannot be a fixed workload. Everything else is a benchmark run
measured on the one measurement path (harness.measure): telemetry windows around load, warm-up,
prefill and decode; the timing path of bench.timing; per-token timestamps in tokens.csv; run.json
written last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import store
from ..config import RunConfig
from ..measure import Point, backend_for, env_isolated, measure, new_record
from ..record import RunRecord


@dataclass(frozen=True)
class Measured:
    record: RunRecord
    raw: object | None  # engine.RawRep of the timed generation (None when it failed before)
    prompt: object | None  # workload.Prompt
    text: str  # the generated text without end-of-generation tokens


def measure_once(rc: RunConfig, plan, job_dir: Path, make_prompt: Callable, *, cfg: dict,
                 overrides: tuple[str, ...] = (), job_name: str = "agent", device_lock: dict | None = None,
                 backend: Any = None) -> Measured:
    """Load (or reuse) the model of `plan`, build the prompt with `make_prompt(model) -> (Prompt,
    config dict)`, run bench.warmup untimed and one timed generation, and write run.json,
    tokens.csv and telemetry.csv under job_dir. A failure is recorded (status failed, with its
    phase), not raised.

    `backend`: the engine to run on (a supervised worker by default, started and stopped here).
    Right before the load it holds the device lock of the devices `plan` computes on, as a sweep
    point does; `device_lock`: the record of locks the caller holds already (recorded as it is)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    own = backend is None
    backend = backend_for(rc, isolated=env_isolated()) if own else backend
    got: dict = {}

    def prompt_of(model):
        prompt, config = make_prompt(model)
        got["prompt"] = prompt
        return prompt, config

    try:
        point = Point(rc, plan, backend, new_record(rc, plan, job_name=job_name, overrides=overrides, config=cfg),
                      job_dir)
        rec = measure(point, repetitions=1, make_prompt=prompt_of, device_lock=device_lock)
        raw = point.raws[0] if point.raws else None
        text = ""
        if rec.status == "ok" and raw is not None:
            eog = set(point.model.eog_tokens)
            text = point.model.detokenize([t for t in raw.token_ids if t not in eog]).strip()
        store.write_json(job_dir / store.RUN_FILE, rec.to_dict())
    finally:
        if own:
            backend.close()
    return Measured(rec, raw, got.get("prompt"), text)
