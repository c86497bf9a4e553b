"""The one measurement path: every caller that measures (`harness run`, the narrative agent, the
`harness_bench` pytest fixture, the experiments) goes through it, so a record has the same fields
whoever made it.

A `Point` is one planned configuration measured on a backend (engine.supervisor.WorkerEngine for
isolation, engine.backend.InProcess otherwise). Its steps, in order:

    p = Point(rc, plan, backend, record, job_dir)   # the record to fill (status failed until done)
    p.begin()          # timing path, provenance, telemetry sampler on the backend's process
    p.load()           # device lock, load (or reuse), effective parameters, load window
    p.prompt()         # the workload's prompt, built with the loaded model's tokenizer
                       # (p.start() does these three)
    p.warm_up(w)       # bench.warmup untimed generations (auto: until steady), or p.warmup(i) one
    p.repetition(r)    # one timed generation -> Repetition (+ tokens.csv rows, telemetry windows)
    p.finish()         # the ok record with aggregates, roofline and telemetry
    p.close()          # always: telemetry written, sampler stopped

A sweep measured in rounds (harness.schedule) visits a point several times: between visits
`pause()` stops its sampler and `resume()` restarts it and makes sure its model is loaded.

`measure()` runs them in the standard order and turns an exception into a failed record with its
phase: the run boundary. The timing path is chosen in `timing_path()`, a raw repetition becomes a
recorded one in `to_repetition()`, provenance is built in `provenance_block()`: once each.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import prefetch, store
from .config import RunConfig
from .engine.backend import ModelView, error_type
from .engine.llama import RawRep
from .metrics import aggregate, rep_metrics
from .record import Repetition, RunError, RunRecord

log = logging.getLogger("harness")

TOKENS_COLUMNS = ("rep", "index", "t_ns", "token_id")
WARMUP_SEED_OFFSET = 1_000_000  # warm-up i uses seed + 1e6 + i; repetition r uses seed + r
WARMUP_TOLERANCE = 0.05  # bench.warmup=auto: two consecutive warm-up decode rates within 5% ...
WARMUP_MAX = 6  # ... or this many warm-ups, whichever comes first (a warning says it did not settle)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Notices:
    """Notices said once per process (a sweep repeats them per point)."""

    said: set = field(default_factory=set)

    def once(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said.add(key)
            log.warning("%s", message)


NOTICES = Notices()


def timing_path(requested: str, notices: Notices = NOTICES) -> tuple[str, dict]:
    """(timing path, the native library's status for provenance) for bench.timing. auto uses the
    native library when it is usable and says once why not otherwise."""
    from .engine import native

    st = native.status()
    if requested == "native" and not st.usable:  # checked in preflight; the library changed since
        raise native.NativeUnavailable(st.reason)
    if requested == "python" or not st.usable:
        if requested == "auto":
            notices.once("native", f"timing path: python (native library unusable: {st.reason})")
        return "python", {**st.to_dict(), "requested": requested}
    return "native", {**st.to_dict(), "requested": requested}


def provenance_block(plan, timing: str, native_status: dict) -> dict:
    """run.json's provenance: harness, engine build, host, GPU, the model file (sha256 cached)."""
    from . import provenance
    from .engine import engine_info
    from .modelfile import sha256_file

    model = plan.gguf.to_dict()
    model.pop("metadata", None)
    model["sha256"] = sha256_file(Path(plan.model_path))
    # real or a performance twin (synthetic weights: the real model's speed, text that is noise)
    model.update(weights_block(plan))
    prov = provenance.collect(engine_info(), timing, model)
    prov["native"] = native_status
    return prov


def weights_block(plan) -> dict:
    """run.json's marking of the weights measured: `weights` real|twin, and for a twin
    `synthetic: true`, `twin_of`, `twin_seed`, `twin_source_sha256`, `twin_version` (from the
    file's marker, whatever the config asked for)."""
    if plan.twin is None:
        return {"weights": "real", "synthetic": False}
    return {"weights": "twin", **plan.twin, "synthetic": True}


def decode_rate(raw: RawRep) -> float | None:
    """Decode tokens/s of a raw repetition: (n - 1) / (last token - first token)."""
    n = len(raw.token_ns)
    span = raw.token_ns[-1] - raw.token_ns[0] if n > 1 else 0
    return (n - 1) / (span / 1e9) if span > 0 else None


def engine_split(raw: RawRep) -> dict:
    """Engine time of the decode steps and mean sampling time per token, from the native path's
    per-token clocks or (python path) llama.cpp's perf counter and the Python-side sampling clock."""
    if raw.decode_ns is not None:
        decode = sum(raw.decode_ns[1:]) / 1e6 if len(raw.decode_ns) > 1 else None
    else:
        decode = raw.engine_eval_ms
    sampling = sum(raw.sample_ns) / len(raw.sample_ns) / 1e6 if raw.sample_ns else None
    return {"decode_engine_ms": decode, "sampling_ms": sampling}


def to_repetition(r: int, raw: RawRep, seed: int) -> tuple[Repetition, list[tuple]]:
    """A raw repetition as recorded: its metrics, ITLs and tokens.csv rows (times from t_request)."""
    m = rep_metrics(r, raw.t_request_ns, raw.token_ns, raw.n_prompt_tokens, raw.engine_prompt_eval_ms,
                    **engine_split(raw))
    itl = tuple((b - a) / 1e6 for a, b in zip(raw.token_ns, raw.token_ns[1:]))
    rep = Repetition(metrics=m, seed=seed, t_prefill_end_ms=(raw.t_prefill_end_ns - raw.t_request_ns) / 1e6,
                     engine_eval_ms=raw.engine_eval_ms, engine_n_eval=raw.engine_n_eval, itl_ms=itl)
    rows = [(r, i, t - raw.t_request_ns, tok) for i, (t, tok) in enumerate(zip(raw.token_ns, raw.token_ids))]
    return rep, rows


@contextmanager
def phase(name: str):
    """Tag an exception raised inside the block with the run phase it happened in."""
    try:
        yield
    except Exception as e:
        if not hasattr(e, "harness_phase"):
            e.harness_phase = name
        raise


def new_record(rc: RunConfig, plan, *, job_name: str, overrides=(), config: dict, run_id: str | None = None,
               started_at: str | None = None) -> RunRecord:
    """The record of a point about to be measured: failed until it is finished."""
    import uuid

    started = started_at or now_iso()
    return RunRecord(run_id=run_id or uuid.uuid4().hex, sweep_name=str(rc.sweep_name), job_name=job_name,
                     status="failed", started_at=started, ended_at=started, overrides=tuple(overrides),
                     config=config, effective=plan.effective_dict(), warnings=tuple(plan.warnings))


def failed(rec: RunRecord, e: BaseException, default_phase: str = "measure") -> RunRecord:
    return replace(rec, status="failed", ended_at=now_iso(),
                   error=RunError(error_type(e), str(e), getattr(e, "harness_phase", default_phase)))


class Point:
    """One configuration measured on a backend; see the module docstring for the steps."""

    def __init__(self, rc: RunConfig, plan, backend: Any, record: RunRecord, job_dir: Path | None = None,
                 notices: Notices = NOTICES):
        self.rc, self.plan, self.backend, self.job_dir = rc, plan, backend, job_dir
        self.record = record
        self.notices = notices
        self.timing = "python"
        self.sampler = None
        self._tinfo: dict = {}
        self.model: ModelView | None = None
        self.gen: dict = {}
        self.repetitions: list[Repetition] = []
        self.raws: list[RawRep] = []
        self.token_rows: list[tuple] = []
        self.warmups = 0
        self.warmup_rates: list[float | None] = []
        self.after: tuple = ()  # modules to import during the first warm-up (harness.prefetch)
        self._prev_end: int | None = None
        self._closed = False
        self.reloads = 0

    # --- steps ----------------------------------------------------------------------------------
    def begin(self) -> None:
        from .telemetry.session import open_sampler

        self.timing, native_status = timing_path(self.rc.bench.timing, self.notices)
        prov = provenance_block(self.plan, self.timing, native_status)
        self.record = replace(self.record, timing_path=self.timing, provenance=prov)
        self.sampler, self._tinfo = open_sampler(self.rc.telemetry)
        self.sampler.watch(self.backend.pid)  # host and GPU per-process readings: the engine's process
        self.sampler.start()

    def start(self, device_lock: dict | None = None, make_prompt: Callable | None = None):
        """begin, load and prompt: the point ready for warm-ups and repetitions. Returns the prompt."""
        self.begin()
        self.load(device_lock)
        return self.prompt(make_prompt)

    def load(self, device_lock: dict | None = None) -> ModelView:
        """Hold the point's devices (or record `device_lock`, held by the caller), load or reuse."""
        from . import devicelock

        plan, s = self.plan, self.sampler
        with phase("load"):
            lock = device_lock if device_lock is not None else devicelock.hold_for(plan, self.rc.bench.allow_shared_device)
            self.record.provenance["device_lock"] = lock
            t0 = s.sample()
            self.model = self.backend.model(plan.load_key, plan.gguf.architecture)
            t1 = s.sample()
        info = self.model.info
        if not info.reused:
            s.add_window("load", t0, t1)
            if info.load_log and self.job_dir is not None:
                store.atomic_write_text(self.job_dir / "engine_load.log", info.load_log)
        warnings = list(self.record.warnings) + [f"device {k} shared with another harness job (pid {p})"
                                                 for k, p in lock["shared_with"].items()]
        if info.n_ctx != plan.n_ctx_effective:
            warnings.append(f"llama.cpp allocated n_ctx={info.n_ctx} for the requested "
                            f"runtime.n_ctx={plan.n_ctx_effective}; prompts are checked against the request")
            # n_ctx_effective is what llama.cpp allocated (results/schema); the id follows it
            plan = self.plan = replace(plan, n_ctx_effective=info.n_ctx)
        if info.n_batch != plan.load_key.n_batch:
            warnings.append(f"llama.cpp caps n_batch at {info.n_batch} (runtime.n_batch={plan.load_key.n_batch}): "
                            "prompts are evaluated in chunks of that size")
        self.record = replace(
            self.record, warnings=tuple(warnings),
            load={"load_ms": info.load_ms, "reused": info.reused, "loads_in_process": info.loads_in_process,
                  "isolated": bool(getattr(self.backend, "isolated", False)),
                  **({"vram": info.vram} if info.vram else {}),
                  **({"mapping": info.mapping} if info.mapping else {})},
            effective=plan.effective_dict() | info.effective())
        return self.model

    def prompt(self, make_prompt: Callable | None = None):
        """The workload's prompt, or `make_prompt(model) -> (Prompt, config dict)` (a prompt that
        depends on the loaded model: the narrative's facts cut to fit its context)."""
        from .workload import build_prompt

        assert self.model is not None, "load() first"
        s, b, w = self.rc.sampling, self.rc.bench, self.rc.workload
        with phase("prompt"):
            if make_prompt is None:
                prompt, cfg, max_tokens = build_prompt(w, self.model, s.seed), None, w.max_tokens
            else:
                prompt, cfg = make_prompt(self.model)
                max_tokens = cfg["workload"]["max_tokens"]
        self.record = replace(self.record, prompt=prompt.summary(), **({"config": cfg} if cfg is not None else {}))
        self.gen = dict(text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=s,
                        max_tokens=max_tokens, ignore_eos=b.ignore_eos)
        return prompt

    def pause(self) -> None:
        """Between visits: stop sampling (what was sampled stays)."""
        if self.sampler is not None:
            self.sampler.stop()
        self._prev_end = None  # the time until the next visit is other points' work, not idle

    def resume(self) -> None:
        """A later visit: sampling again, on the engine's process (a new one after a crash), and
        the model loaded (again, when the engine freed it or restarted: a load window, counted)."""
        s = self.sampler
        s.watch(self.backend.pid)
        s.start()
        with phase("load"):
            t0 = s.sample()
            self.model = self.backend.model(self.plan.load_key, self.plan.gguf.architecture)
            t1 = s.sample()
        if not self.model.info.reused:
            s.add_window("load", t0, t1)
            self.reloads += 1
            self.record = replace(self.record, load={**self.record.load, "reloads": self.reloads})

    def warm_up(self, setting: int | str, reference: float | None = None) -> int:
        """bench.warmup: that many untimed generations, or for "auto" until two consecutive
        decode rates agree within WARMUP_TOLERANCE (or the last agrees with `reference`, this
        point's rate from an earlier round), at most WARMUP_MAX. Returns how many ran."""
        from .schedule import steady

        if setting != "auto":
            for _ in range(int(setting)):
                self.warmup(self.warmups)
            return int(setting)
        rates: list[float | None] = []
        for _ in range(WARMUP_MAX):
            raw = self.warmup(self.warmups)
            rates.append(decode_rate(raw))
            if steady(rates, WARMUP_TOLERANCE, reference):
                break
        else:
            msg = (f"warm-up did not settle: {WARMUP_MAX} warm-up decode rates "
                   + ", ".join("-" if x is None else f"{x:.1f}" for x in rates) + " tok/s")
            if msg not in self.record.warnings:
                self.record = replace(self.record, warnings=(*self.record.warnings, msg))
        self.warmup_rates.extend(rates)
        return len(rates)

    def warmup(self, i: int) -> RawRep:
        """Untimed generation i (seed + 1e6 + i), inside the telemetry's warmup window. While the
        worker runs it, this process imports what it needs after the points (`after`)."""
        s = self.sampler
        with phase("warmup"):
            if self.after and hasattr(self.backend, "on_next_wait"):
                after, self.after = self.after, ()
                self.backend.on_next_wait(lambda: prefetch.imports(after))
            t0 = s.sample()
            raw = self.backend.generate(self.timing, key=self.model.info.key,
                                        seed=self.rc.sampling.seed + WARMUP_SEED_OFFSET + i, **self.gen)
            s.add_window("warmup", t0, s.sample())
        self.warmups += 1
        return raw

    def repetition(self, r: int, *, round: int | None = None, order: int | None = None) -> Repetition:
        """Timed repetition r (seed + r) with its telemetry windows (idle since the previous one,
        prefill, decode). `round` and `order` (its place in the sweep's execution order) are
        recorded with it when the sweep is scheduled in rounds."""
        s = self.sampler
        seed = self.rc.sampling.seed + r
        with phase("measure"):
            start = s.sample()
            if self._prev_end is not None:
                s.add_window("idle", self._prev_end, start)
            raw = self.backend.generate(self.timing, key=self.model.info.key, seed=seed, **self.gen)
            self._prev_end = s.sample()
        if raw.token_ns:
            s.add_window("prefill", raw.t_request_ns, raw.token_ns[0])
            s.add_window("decode", raw.token_ns[0], raw.token_ns[-1], tokens=len(raw.token_ns) - 1)
        rep, rows = to_repetition(r, raw, seed)
        rep = replace(rep, round=round, order=order)
        self.repetitions.append(rep)
        self.raws.append(raw)
        self.token_rows.extend(rows)
        self.record = replace(self.record, repetitions=tuple(self.repetitions), warmup_done=self.warmups)
        return rep

    def finish(self) -> RunRecord:
        """The ok record: aggregates from the repetitions; tokens.csv written."""
        with phase("write"):
            self.write_tokens()
        agg = aggregate([x.metrics for x in self.repetitions], [x.itl_ms for x in self.repetitions])
        self.record = replace(self.record, status="ok", ended_at=now_iso(), warmup_done=self.warmups,
                              repetitions=tuple(self.repetitions), aggregates=agg)
        return self.record

    def write_tokens(self) -> None:
        if self.job_dir is not None and self.token_rows:
            store.write_csv(self.job_dir / store.TOKENS_FILE, TOKENS_COLUMNS, self.token_rows)

    def fail(self, e: BaseException) -> RunRecord:
        """The failed record: whatever was measured before the failure stays (repetitions, token
        timings; the token file is a bonus, whether the failure is recorded is run.json's write)."""
        log.error("%s: failed: %s: %s", self.record.job_name, error_type(e), e)
        try:
            self.write_tokens()
        except OSError as we:
            log.error("%s: token timings not written: %s", self.record.job_name, we)
        self.record = failed(self.record, e)
        return self.record

    def close(self) -> RunRecord:
        """Stop telemetry, write telemetry.csv and put the telemetry block (and, for an ok record,
        the roofline) into the record. Runs whatever happened: a failed point keeps what was sampled."""
        if self._closed or self.sampler is None:
            return self.record
        self._closed = True
        from .telemetry.session import close

        close(self.sampler, self._tinfo)
        extra_w: list[str] = []
        if self.job_dir is not None:
            try:
                write_telemetry(self.job_dir, self.sampler)
            except OSError as e:  # disk full, read-only: run.json's own write decides what happens next
                log.error("%s: telemetry.csv not written: %s", self.record.job_name, e)
                extra_w.append(f"telemetry.csv not written: {e.strerror or e}")
        block, extra = telemetry_block(self.sampler, self._tinfo)
        extra = [*extra, *extra_w]
        rec = replace(self.record, telemetry=block, warnings=(*self.record.warnings, *extra))
        if rec.status == "ok":
            rec = replace(rec, roofline=roofline(rec, self.plan, block.get("gpu")))
        self.record = rec
        return rec


def measure(point: Point, *, repetitions: int | None = None, make_prompt: Callable | None = None,
            device_lock: dict | None = None, on_rep: Callable | None = None) -> RunRecord:
    """The standard order: begin, load, prompt, bench.warmup warm-ups, `repetitions` (default
    bench.repetitions) timed repetitions, finish; close always. An exception becomes a failed
    record with its phase (the run boundary); KeyboardInterrupt and SystemExit propagate.
    `on_rep(phase, i, n, decode_tps)` reports progress."""
    b = point.rc.bench
    n = b.repetitions if repetitions is None else repetitions
    try:
        try:
            point.start(device_lock, make_prompt)
            if on_rep and b.warmup:
                on_rep("warmup", 1, b.warmup if b.warmup != "auto" else 1, None)
            point.warm_up(b.warmup)
            for r in range(n):
                rep = point.repetition(r)
                if on_rep:
                    on_rep("rep", r + 1, n, rep.metrics.decode_tps)
            point.finish()
        except Exception as e:  # the run boundary: record the failure, the caller goes on
            point.fail(e)
    finally:
        point.close()
    return point.record


def write_telemetry(job_dir: Path, sampler) -> None:
    from .telemetry.sampler import CSV_COLUMNS

    rows = sampler.rows()
    if rows:
        t0 = sampler.t0_ns
        store.write_csv(job_dir / "telemetry.csv", CSV_COLUMNS, [(r[0] - t0, *r[1:]) for r in rows])


def telemetry_block(sampler, tinfo: dict) -> tuple[dict, list[str]]:
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
        "sampled_pid": sampler.pid,
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


def backend_for(rc: RunConfig | None = None, *, isolated: bool = True):
    """A new backend: a supervised worker (bench.point_timeout_s bounds each request), or the
    engine in this process."""
    if not isolated:
        from .engine.backend import InProcess

        return InProcess()
    from .engine.supervisor import WorkerEngine

    timeout = getattr(rc.bench, "point_timeout_s", None) if rc is not None else None
    return WorkerEngine(timeout_s=timeout)


def env_isolated() -> bool:
    """HARNESS_ISOLATION=inprocess runs the engine in the measuring process (no crash isolation;
    for debugging with gdb and for the side-by-side cost benchmark)."""
    return os.environ.get("HARNESS_ISOLATION", "worker") != "inprocess"
