"""One configuration point, end to end: validate, plan, load (or reuse), warm up, measure, record.

`run_point` is the Hydra task function. It is the run boundary: an error after planning is caught
here, recorded as `status: failed` with its message, and the sweep goes on. Bad input in a single
run stops before any model loads (one line, exit code 2); in a sweep the sweeper has already
checked every point before the first load.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from . import progress, store
from .config import ConfigError, RunConfig, validate
from .hydra_conf import to_plain
from .metrics import aggregate, rep_metrics
from .record import Repetition, RunError, RunRecord

log = logging.getLogger("harness")

# Statuses of the points run by this process, for the closing "N ok, M failed, K skipped" line.
TALLY: Counter = Counter()
_WARNED: set[str] = set()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def preflight(cfg_dict: dict, *, gpu_offload_supported: bool | None = None):
    """Validate a composed config and plan it (model file, effective parameters). No model load.
    Raises ConfigError."""
    from . import engine
    from .plan import make_plan

    rc = validate(cfg_dict)
    if rc.bench.timing == "native":
        from . import native

        st = native.status()
        if not st.usable:
            raise ConfigError("bench.timing", "native",
                              f"is not available: {st.reason}; use bench.timing=auto or python")
    if rc.telemetry.nvml == "on":
        from .telemetry.session import check

        usable, reason = check("on", rc.telemetry.gpu_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if not usable:
            raise ConfigError("telemetry.nvml", "on", f"requires NVML on the sampled GPU, but {reason} "
                              "(use telemetry.nvml=auto to record host readings only)")
    if gpu_offload_supported is None:
        gpu_offload_supported = engine.gpu_offload_supported()
    return rc, make_plan(rc, gpu_offload_supported=gpu_offload_supported)


def run_point(cfg) -> str:
    """Hydra task function: run one point and write its folder. Returns the status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    job_name = job_dir.name
    overrides = tuple(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    existing = store.read_run(job_dir)
    if existing and existing.get("status") == "ok":
        log.info("%s: already done (status ok), skipped", job_name)
        TALLY["skipped"] += 1
        progress.point_done(job_name, "skipped")
        return "skipped"

    cfg_dict = to_plain(cfg)
    started = _now()
    base = dict(run_id=uuid.uuid4().hex, sweep_name=str(cfg_dict.get("sweep_name")), job_name=job_name,
                started_at=started, overrides=overrides, config=cfg_dict)
    try:
        rc, plan = preflight(cfg_dict)
    except Exception as e:  # the run boundary: an unusable point must not end the sweep
        if isinstance(e, ConfigError) and not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # In a sweep every point was checked before the first load, so something changed since
        # (a model file removed or unreadable): this point fails, the sweep goes on.
        log.error("%s: failed while planning: %s", job_name, e)
        return _finish(job_dir, RunRecord(status="failed", ended_at=_now(),
                                          error=RunError(type(e).__name__, str(e), "plan"), **base))
    for w in plan.warnings:
        if w not in _WARNED:  # once per process: a sweep repeats the same notice per point
            _WARNED.add(w)
            log.warning("%s", w)
    rec = RunRecord(status="failed", ended_at=started, effective=plan.effective_dict(),
                    warnings=plan.warnings, **base)
    state: dict = {"record": rec, "tokens": []}
    try:
        rec = _measure(rc, plan, state, job_dir)
    except Exception as e:  # the run boundary: record the failure, let the sweep go on
        log.error("%s: failed: %s: %s", job_name, type(e).__name__, e)
        phase = getattr(e, "harness_phase", "measure")
        # Whatever was measured before the failure stays: the record and its token timings.
        # The token file is a bonus; whether the failure is recorded at all is run.json's write.
        if state["tokens"]:
            try:
                _write_tokens(job_dir, state["tokens"])
            except OSError as we:
                log.error("%s: token timings not written: %s", job_name, we)
        rec = replace(state["record"], status="failed", ended_at=_now(),
                      error=RunError(type(e).__name__, str(e), phase))
    return _finish(job_dir, rec)


def _write_tokens(job_dir: Path, rows: list[tuple]) -> None:
    store.write_csv(job_dir / store.TOKENS_FILE, ("rep", "index", "t_ns", "token_id"), rows)


def _finish(job_dir: Path, rec: RunRecord) -> str:
    """Write the point's run.json. When that fails (disk full, read-only, quota) the sweep stops
    with store.ResultNotWritten: the next points would measure and lose their results too. The
    atomic write leaves no partial run.json and no temporary file."""
    try:
        store.write_json(job_dir / store.RUN_FILE, rec.to_dict())
    except OSError as e:
        raise store.ResultNotWritten(e) from e
    TALLY[rec.status] += 1
    progress.point_done(rec.job_name, rec.status)
    return rec.status


def _equivalents(job_dir: Path, effective_id: str) -> list[str]:
    """Other points of this sweep that resolved to the same effective configuration."""
    out = []
    for d in store.job_dirs(job_dir.parent):
        if d != job_dir:
            r = store.read_run(d)
            if r and (r.get("effective") or {}).get("effective_id") == effective_id:
                out.append(d.name)
    return out


@contextmanager
def _phase(name: str):
    """Tag an exception raised inside the block with the run phase it happened in."""
    try:
        yield
    except Exception as e:
        if not hasattr(e, "harness_phase"):
            e.harness_phase = name
        raise


def _measure(rc: RunConfig, plan, state: dict, job_dir: Path) -> RunRecord:
    """Telemetry around load, warm-up and the timed repetitions. Progress is kept in
    state["record"] so that a failure loses nothing."""
    from .telemetry.session import close, open_sampler

    sampler, tinfo = open_sampler(rc.telemetry)
    sampler.start()
    try:
        _measure_with(rc, plan, state, job_dir, sampler)
    finally:
        # Telemetry is written whatever happened: a failed point keeps what was sampled.
        close(sampler, tinfo)
        _write_telemetry(job_dir, sampler)
        block, extra = _telemetry_block(sampler, tinfo)
        for key in ("record", "result"):
            if state.get(key) is not None:
                r = state[key]
                state[key] = replace(r, telemetry=block, warnings=(*r.warnings, *extra))
    return replace(state["result"], roofline=roofline(state["result"], plan, block.get("gpu")))


def _with_provenance(rc: RunConfig, plan, rec: RunRecord):
    """(record with timing path and provenance, the provenance dict, the generate function of the
    timing path). Provenance comes first: a point that fails to load still says where and with
    what it ran."""
    from . import engine, provenance
    from .modelfile import sha256_file

    model_prov = plan.gguf.to_dict()
    model_prov.pop("metadata", None)
    model_prov["sha256"] = sha256_file(Path(plan.model_path))
    timing, native_status, generate = _timing_path(rc.bench.timing)
    prov = provenance.collect(engine.engine_info(), timing, model_prov)
    prov["native"] = {**native_status, "requested": rc.bench.timing}
    return replace(rec, timing_path=timing, provenance=prov), prov, generate


def _timed_repetition(lm, generate, gen: dict, r: int, seed: int, sampler, prev_end: int | None):
    """One timed generation with its telemetry windows (idle since `prev_end`, prefill, decode):
    (Repetition, tokens.csv rows, the engine's RawRep, the sample time at its end)."""
    start = sampler.sample()
    if prev_end is not None:
        sampler.add_window("idle", prev_end, start)
    raw = generate(lm, seed=seed, **gen)
    end = sampler.sample()
    if raw.token_ns:
        sampler.add_window("prefill", raw.t_request_ns, raw.token_ns[0])
        sampler.add_window("decode", raw.token_ns[0], raw.token_ns[-1], tokens=len(raw.token_ns) - 1)
    m = rep_metrics(r, raw.t_request_ns, raw.token_ns, raw.n_prompt_tokens, raw.engine_prompt_eval_ms,
                    **_engine_split(raw))
    itl = tuple((b - a) / 1e6 for a, b in zip(raw.token_ns, raw.token_ns[1:]))
    rep = Repetition(metrics=m, seed=seed, t_prefill_end_ms=(raw.t_prefill_end_ns - raw.t_request_ns) / 1e6,
                     engine_eval_ms=raw.engine_eval_ms, engine_n_eval=raw.engine_n_eval, itl_ms=itl)
    rows = [(r, i, t - raw.t_request_ns, tok) for i, (t, tok) in enumerate(zip(raw.token_ns, raw.token_ids))]
    return rep, rows, raw, end


def _measure_with(rc: RunConfig, plan, state: dict, job_dir: Path, sampler) -> None:
    from . import devicelock, engine
    from .workload import build_prompt

    rec, prov, generate = _with_provenance(rc, plan, state["record"])
    state["record"] = rec
    with _phase("load"):
        prov["device_lock"] = lock = devicelock.hold_for(plan, rc.bench.allow_shared_device)
        t0 = sampler.sample()
        lm, reused = engine.load(plan)
        t1 = sampler.sample()
    if not reused:
        sampler.add_window("load", t0, t1)
    warnings = list(rec.warnings) + [f"device {k} shared with another harness job (pid {p})"
                                     for k, p in lock["shared_with"].items()]
    if lm.n_ctx != plan.n_ctx_effective:
        warnings.append(f"llama.cpp allocated n_ctx={lm.n_ctx} for the requested runtime.n_ctx={plan.n_ctx_effective}")
        plan = replace(plan, n_ctx_effective=lm.n_ctx)
    equivalent = _equivalents(job_dir, plan.effective_id)
    if equivalent:
        log.warning("%s: same effective configuration as %s", rec.job_name, ", ".join(equivalent))
    if not reused and lm.load_log:
        store.atomic_write_text(job_dir / "engine_load.log", lm.load_log)
    rec = replace(
        rec,
        load={"load_ms": lm.load_ms, "reused": reused, "loads_in_process": lm.loads_in_process},
        warnings=tuple(warnings), equivalent_to=tuple(equivalent),
        effective=plan.effective_dict() | {"flash_attn_effective": lm.flash_attn_effective,
                                           "n_threads": plan.load_key.n_threads,
                                           "n_threads_batch": plan.load_key.n_threads_batch},
    )
    state["record"] = rec
    s, b, w = rc.sampling, rc.bench, rc.workload
    with _phase("prompt"):
        prompt = build_prompt(w, lm, s.seed)
    rec = state["record"] = replace(rec, prompt=prompt.summary())
    gen = dict(text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=s,
               max_tokens=w.max_tokens, ignore_eos=b.ignore_eos)
    with _phase("warmup"):
        if b.warmup:
            with sampler.window("warmup"):
                for i in range(b.warmup):
                    progress.rep(rec.job_name, "warmup", i + 1, b.warmup, None)
                    generate(lm, seed=s.seed + 1_000_000 + i, **gen)
    reps: list[Repetition] = []
    token_rows: list[tuple] = state["tokens"]
    prev_end = None
    with _phase("measure"):
        for r in range(b.repetitions):
            rep, rows, _, prev_end = _timed_repetition(lm, generate, gen, r, s.seed + r, sampler, prev_end)
            reps.append(rep)
            token_rows.extend(rows)
            state["record"] = replace(rec, repetitions=tuple(reps), warmup_done=b.warmup)
            progress.rep(rec.job_name, "rep", r + 1, b.repetitions, rep.metrics.decode_tps)
    with _phase("write"):
        _write_tokens(job_dir, token_rows)
    agg = aggregate([x.metrics for x in reps], [x.itl_ms for x in reps])
    state["result"] = replace(rec, status="ok", ended_at=_now(), warmup_done=b.warmup,
                              repetitions=tuple(reps), aggregates=agg)


def _timing_path(requested: str):
    """(timing path, native library status for provenance, generate function) for bench.timing.
    auto uses the native library when it is usable and says why not otherwise."""
    from . import engine, native

    st = native.status()
    if requested == "native" and not st.usable:  # checked in preflight; the library changed since
        raise native.NativeUnavailable(st.reason)
    if requested == "python" or not st.usable:
        if requested == "auto" and "native" not in _WARNED:
            _WARNED.add("native")
            log.warning("timing path: python (native library unusable: %s)", st.reason)
        return "python", st.to_dict(), engine.generate
    return "native", st.to_dict(), native.generate


def _engine_split(raw) -> dict:
    """Engine time of the decode steps and mean sampling time per token, from the native path's
    per-token clocks or (python path) llama.cpp's perf counter and the Python-side sampling clock."""
    if raw.decode_ns is not None:
        decode = sum(raw.decode_ns[1:]) / 1e6 if len(raw.decode_ns) > 1 else None
    else:
        decode = raw.engine_eval_ms
    sampling = sum(raw.sample_ns) / len(raw.sample_ns) / 1e6 if raw.sample_ns else None
    return {"decode_engine_ms": decode, "sampling_ms": sampling}


def _write_telemetry(job_dir: Path, sampler) -> None:
    from .telemetry.sampler import CSV_COLUMNS

    rows = sampler.rows()
    if rows:
        t0 = sampler.t0_ns
        store.write_csv(job_dir / "telemetry.csv", CSV_COLUMNS, [(r[0] - t0, *r[1:]) for r in rows])


def _telemetry_block(sampler, tinfo: dict) -> tuple[dict, list[str]]:
    """run.json's telemetry (what was sampled, how, per-phase summaries, what the board does not
    support) and the warnings it raises (other processes on the sampled GPU)."""
    others = sampler.other_processes()
    warnings = [f"another process uses the sampled GPU: pid {p['pid']} ({p['vram_mib']:.0f} MiB)" for p in others]
    gpu = sampler.gpu
    block = {
        **tinfo,
        "status": sampler.status,
        "error": sampler.error,
        "n_samples": len(sampler.samples),
        "t0_ns": sampler.t0_ns,
        "windows": [{"name": w.name, "t0_ns": w.t0_ns - sampler.t0_ns, "t1_ns": w.t1_ns - sampler.t0_ns,
                     "tokens": w.tokens} for w in sampler.windows] if sampler.t0_ns is not None else [],
        "power_source": gpu.power_source if gpu is not None else None,
        "unsupported": (dict(gpu.unsupported) if gpu is not None else {})
        | (sampler.host.unsupported if sampler.host is not None else {}),
        "energy_counter_update_ms_min": sampler.counter_update_ms(),
        "other_processes": others,
        "phases": sampler.summaries(),
    }
    return block, warnings


def roofline(rec: RunRecord, plan, gpu: dict | None) -> dict:
    """Decode ceiling from memory bandwidth: peak bandwidth / bytes read per generated token (at
    least the model's weight bytes), and the measured decode rate as a share of it."""
    weights = plan.gguf.tensor_data_bytes
    out = {"bytes_per_token_min": weights, "peak_mem_bandwidth_gbps": None, "decode_tps_ceiling": None,
           "bandwidth_efficiency": None, "reason": None}
    if plan.n_gpu_layers_effective == 0:
        out["reason"] = "CPU run (n_gpu_layers_effective=0): no GPU memory bandwidth applies"
    elif not gpu or not gpu.get("peak_mem_bandwidth_gbps"):
        out["reason"] = "GPU memory bus width or maximum memory clock unknown (NVML not sampled or not supported)"
    else:
        peak = gpu["peak_mem_bandwidth_gbps"]
        ceiling = peak * 1e9 / weights
        decode = (rec.aggregates.get("decode_tps") or {}).get("mean")
        out.update(peak_mem_bandwidth_gbps=peak, decode_tps_ceiling=ceiling,
                   bandwidth_efficiency=decode / ceiling if decode else None,
                   reason=None if plan.n_gpu_layers_effective >= plan.n_offloadable_layers
                   else "partial offload: the ceiling assumes every weight is read from GPU memory")
    return out
