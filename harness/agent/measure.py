"""One measured generation whose prompt is built after the model is loaded, recorded as a run.

The narrative's prompt depends on the loaded model (the facts table is cut to fit its context,
counted with its tokenizer), so it cannot be a fixed workload. Everything else is a benchmark run
like the runner's: telemetry windows around load, warm-up, prefill and decode; the timing path of
bench.timing; per-token timestamps in tokens.csv; run.json (schema version 1) written last.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .. import store
from ..config import RunConfig
from ..metrics import aggregate
from ..record import RunError, RunRecord

log = logging.getLogger("harness")


@dataclass(frozen=True)
class Measured:
    record: RunRecord
    raw: object | None  # engine.RawRep of the timed generation (None when it failed before)
    prompt: object | None  # workload.Prompt
    text: str  # the generated text without end-of-generation tokens


def measure_once(rc: RunConfig, plan, job_dir: Path, make_prompt: Callable, *, cfg: dict,
                 overrides: tuple[str, ...] = (), job_name: str = "agent", device_lock: dict | None = None) -> Measured:
    """Load (or reuse) the model of `plan`, build the prompt with `make_prompt(lm) -> Prompt`, run
    bench.warmup untimed and one timed generation, and write run.json, tokens.csv and telemetry.csv
    under job_dir. A failure is recorded (status failed, with its phase), not raised.

    Right before the load it holds the device lock of the devices `plan` computes on, as a sweep
    point does (devicelock.hold_for, bench.allow_shared_device): a device another harness job
    holds fails the run with DeviceBusy. `device_lock`: the record of locks the caller holds
    already for this run's devices (an experiment holding them for all its runs); it is recorded
    as it is, and nothing is taken or released."""
    from .. import runner
    from ..telemetry.session import close, open_sampler

    job_dir.mkdir(parents=True, exist_ok=True)
    rec = RunRecord(run_id=uuid.uuid4().hex, sweep_name=rc.sweep_name, job_name=job_name, status="failed",
                    started_at=runner._now(), ended_at=runner._now(), overrides=tuple(overrides), config=cfg,
                    effective=plan.effective_dict(), warnings=tuple(plan.warnings))
    state: dict = {"record": rec, "result": None, "tokens": [], "raw": None, "prompt": None, "text": ""}
    sampler, tinfo = open_sampler(rc.telemetry)
    sampler.start()
    try:
        _run(rc, plan, job_dir, make_prompt, state, sampler, device_lock)
    except Exception as e:  # the run boundary: the failure is the record's
        log.error("%s: failed: %s: %s", job_name, type(e).__name__, e)
        if state["tokens"]:
            runner._write_tokens(job_dir, state["tokens"])
        state["record"] = replace(state["record"], status="failed", ended_at=runner._now(),
                                  error=RunError(type(e).__name__, str(e), getattr(e, "harness_phase", "measure")))
    finally:
        close(sampler, tinfo)
        runner._write_telemetry(job_dir, sampler)
        block, extra = runner._telemetry_block(sampler, tinfo)
    final = state["result"] or state["record"]
    final = replace(final, telemetry=block, warnings=(*final.warnings, *extra))
    if final.status == "ok":
        final = replace(final, roofline=runner.roofline(final, plan, block.get("gpu")))
    store.write_json(job_dir / store.RUN_FILE, final.to_dict())
    return Measured(final, state["raw"], state["prompt"], state["text"])


def _run(rc: RunConfig, plan, job_dir: Path, make_prompt: Callable, state: dict, sampler,
         device_lock: dict | None) -> None:
    from .. import devicelock, engine
    from ..runner import _phase, _timed_repetition, _with_provenance, _write_tokens

    rec, prov, generate = _with_provenance(rc, plan, state["record"])
    state["record"] = rec
    with _phase("load"):
        lock = prov["device_lock"] = (device_lock if device_lock is not None
                                      else devicelock.hold_for(plan, rc.bench.allow_shared_device))
        t0 = sampler.sample()
        lm, reused = engine.load(plan)
        t1 = sampler.sample()
    if not reused:
        sampler.add_window("load", t0, t1)
        if lm.load_log:
            store.atomic_write_text(job_dir / "engine_load.log", lm.load_log)
    shared = tuple(f"device {k} shared with another harness job (pid {p})" for k, p in lock["shared_with"].items())
    rec = state["record"] = replace(
        rec, warnings=(*rec.warnings, *shared),
        load={"load_ms": lm.load_ms, "reused": reused, "loads_in_process": lm.loads_in_process},
        effective=plan.effective_dict() | {"flash_attn_effective": lm.flash_attn_effective,
                                           "n_ctx_effective": lm.n_ctx,
                                           "n_threads": plan.load_key.n_threads,
                                           "n_threads_batch": plan.load_key.n_threads_batch})
    s, b = rc.sampling, rc.bench
    with _phase("prompt"):
        prompt, cfg = make_prompt(lm)
    state["prompt"] = prompt
    rec = state["record"] = replace(rec, prompt=prompt.summary(), config=cfg)
    max_tokens = cfg["workload"]["max_tokens"]
    gen = dict(text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=s,
               max_tokens=max_tokens, ignore_eos=b.ignore_eos)
    with _phase("warmup"):
        if b.warmup:
            with sampler.window("warmup"):
                for i in range(b.warmup):
                    generate(lm, seed=s.seed + 1_000_000 + i, **gen)
    with _phase("measure"):
        rep, rows, raw, _ = _timed_repetition(lm, generate, gen, 0, s.seed, sampler, None)
        state["tokens"].extend(rows)
        state["raw"] = raw
    with _phase("write"):
        _write_tokens(job_dir, state["tokens"])
        eog = set(lm.eog_tokens)
        state["text"] = lm.detokenize([t for t in raw.token_ids if t not in eog]).strip()
    state["result"] = replace(rec, status="ok", ended_at=_now_iso(), warmup_done=b.warmup, repetitions=(rep,),
                              aggregates=aggregate([rep.metrics], [rep.itl_ms]))


def _now_iso() -> str:
    from ..runner import _now

    return _now()
