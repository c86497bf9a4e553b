"""SIGKILL at seeded random moments of a real sweep, over and over on one sweep folder, then a
resume: nothing finished is lost or re-measured, nothing left behind is corrupt, and no
temporary file is ever taken for a result.

SIGINT/SIGTERM (clean stops) are tested in test_interrupt.py; SIGKILL gives the process no
chance to clean up, so this checks what the atomic writes alone guarantee. The figures (trials,
faults injected, results lost, corrupt files) are printed in the terminal summary and recorded as
the test's `fault_matrix` property (JUnit XML).

HARNESS_FAULT_SEED=N replays another seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import load_schema, run_harness

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("HARNESS_FAULT_SEED", "20261126"))
MIN_FAULTS = 10
MAX_TRIALS = 30
POINTS = ["runtime.n_ctx=256,512", "sampling.temperature=0.2,1.0"]
# Smaller than TINY: many processes start here, and one thread keeps a point short on a busy host.
BUDGET = ["workload.max_tokens=4", "bench.repetitions=1", "bench.warmup=0", "runtime.n_threads=1"]
# Hydra's override_dirname: the job's overrides sorted by key (sweep_name, results_dir excluded).
EXPECTED_JOBS = {f"bench.repetitions=1,bench.warmup=0,runtime.n_ctx={n},runtime.n_threads=1,"
                 f"sampling.temperature={t},workload.max_tokens=4" for n in (256, 512) for t in (0.2, 1.0)}
# How a kill moment is chosen: after a random delay from the start (mostly start-up, load and
# measurement), right after a new run.json is renamed into place, or while a temporary file of an
# atomic write exists (inside the write).
MODES = ("delay", "after_run_json", "inside_write")


def _tick(seconds: float) -> None:
    threading.Event().wait(seconds)


def _run_ids(sweep: Path) -> dict[str, str]:
    out = {}
    for p in sweep.glob("*/run.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["run_id"]
        except (OSError, ValueError, KeyError):
            pass  # checked (and counted as corrupt) in _check
    return out


def _tmp_files(sweep: Path) -> list[Path]:
    return [p for p in sweep.rglob(".tmp-*")] if sweep.is_dir() else []


def _wait_kill_moment(proc, sweep: Path, mode: str, rng: random.Random) -> tuple[bool, str]:
    """Wait for the chosen moment. Returns (the process is still running there, what was waited for)."""
    if mode == "delay":
        delay = rng.uniform(0.1, 8.0)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            _tick(0.01)
        return proc.poll() is None, f"{delay:.2f}s"
    if mode == "after_run_json":
        before = set(_run_ids(sweep))
        while proc.poll() is None:
            if {p.parent.name for p in sweep.glob("*/run.json")} - before:
                return True, "new run.json"
            _tick(0.005)
        return False, "new run.json"
    # inside_write: while a temporary file of an atomic write exists: the k-th this process creates
    # (sweep.json at the start, then the job files, run.json, the sweep index at the end) or the
    # first of a given result file. A write missed (too short to see) is a trial without a fault.
    target = rng.choice([None, None, "run.json", "tokens.csv", "telemetry.csv"])
    k = rng.randint(1, 4)
    old, seen = set(_tmp_files(sweep)), set()
    while proc.poll() is None:
        seen |= set(_tmp_files(sweep)) - old
        hits = seen if target is None else {p for p in seen if p.name.startswith(f".tmp-{target}-")}
        if len(hits) >= (k if target is None else 1):
            return True, f"temporary file {sorted(p.name for p in hits)[-1]}"
        _tick(0.001)
    return False, f"temporary file #{k}" if target is None else f"temporary {target}"


def _check(sweep: Path, seen_ok: dict[str, str], schema: dict, sweep_schema: dict) -> tuple[int, int]:
    """Check what a kill left behind. Returns (results lost, corrupt files)."""
    import jsonschema

    from harness import store
    from harness.analysis.ingest import ingest

    corrupt = lost = 0
    current: dict[str, dict] = {}
    for p in sweep.glob("*/run.json"):
        try:
            rec = json.loads(p.read_text())
            jsonschema.validate(rec, schema)
            current[p.parent.name] = rec
        except (ValueError, jsonschema.ValidationError):
            corrupt += 1
    if (sweep / "sweep.json").exists():
        try:
            jsonschema.validate(json.loads((sweep / "sweep.json").read_text()), sweep_schema)
        except (ValueError, jsonschema.ValidationError):
            corrupt += 1
    for job, run_id in seen_ok.items():
        rec = current.get(job)
        if rec is None or rec["run_id"] != run_id or rec["status"] != "ok":
            lost += 1  # gone, or measured again
    for job, rec in current.items():
        if rec["status"] == "ok":
            seen_ok.setdefault(job, rec["run_id"])
    # A temporary file is never a result: not a job folder, not an ingested file.
    listed = store.job_dirs(sweep)
    assert all((d / "run.json").is_file() and not d.name.startswith(".") for d in listed)
    assert {d.name for d in listed} == {p.parent.name for p in sweep.glob("*/run.json")}
    if listed:
        res = ingest([sweep])
        read = {f.path for f in res.files if f.kind not in ("skipped", "unrecognised")}
        assert not [f for f in read if ".tmp-" in f], read
        assert {f for f in read if f.endswith("/run.json")} == {f"{job}/run.json" for job in current}, read
    return lost, corrupt


def test_sigkill_matrix(tmp_path, model_path, request, record_property):
    rng = random.Random(SEED)
    schema, sweep_schema = load_schema(), load_schema("sweep.schema.json")
    args = ["run", "-m", *POINTS, *BUDGET, "report.auto=false", f"results_dir={tmp_path}"]
    figures = {"seed": SEED, "trials": 0, "faults_injected": 0, "results_lost": 0, "corrupt_files": 0,
               "tmp_files_left": 0, "completed_sweeps": 0, "modes": {m: 0 for m in MODES}, "log": []}
    started = time.monotonic()
    round_ = 0
    sweep = tmp_path / f"k{round_}"
    seen_ok: dict[str, str] = {}
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.setdefault("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")  # as run_harness: this session's locks
    while figures["faults_injected"] < MIN_FAULTS and figures["trials"] < MAX_TRIALS:
        mode = MODES[figures["trials"] % len(MODES)] if figures["trials"] < 2 * len(MODES) else \
            rng.choices(MODES, weights=(3, 1, 3))[0]
        figures["trials"] += 1
        t_p = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "harness", *args, f"sweep_name={sweep.name}"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            running, moment = _wait_kill_moment(proc, sweep, mode, rng)
            if running:
                proc.send_signal(signal.SIGKILL)
                figures["faults_injected"] += 1
                figures["modes"][mode] += 1
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        lost, corrupt = _check(sweep, seen_ok, schema, sweep_schema)
        figures["log"].append(f"{sweep.name} {mode} ({moment}): exit {rc} after {time.monotonic() - t_p:.1f}s, "
                              f"{len(seen_ok)} ok, {len(_tmp_files(sweep))} temporary files")
        figures["results_lost"] += lost
        figures["corrupt_files"] += corrupt
        if rc == 0:  # the sweep finished before the kill: check it, go on with a fresh one
            assert set(seen_ok) == EXPECTED_JOBS
            figures["completed_sweeps"] += 1
            figures["tmp_files_left"] += len(_tmp_files(sweep))
            round_ += 1
            sweep, seen_ok = tmp_path / f"k{round_}", {}
    figures["tmp_files_left"] += len(_tmp_files(sweep))
    # The final resume finishes the sweep: exactly the expected points, each ok, once, and the
    # points finished before the kills are skipped, not measured again.
    done_before = dict(seen_ok)
    final = run_harness(*args, f"sweep_name={sweep.name}", cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert final.stdout.strip().splitlines()[-1] == (
        f"{len(EXPECTED_JOBS) - len(done_before)} ok, 0 failed, {len(done_before)} skipped")
    lost, corrupt = _check(sweep, seen_ok, schema, sweep_schema)
    figures["results_lost"] += lost
    figures["corrupt_files"] += corrupt
    assert {p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")} == EXPECTED_JOBS
    assert set(seen_ok) == EXPECTED_JOBS
    recs = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/run.json")}
    assert {j: r["status"] for j, r in recs.items()} == {j: "ok" for j in EXPECTED_JOBS}
    assert len({r["run_id"] for r in recs.values()}) == len(EXPECTED_JOBS)
    assert all(recs[j]["run_id"] == rid for j, rid in done_before.items())
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["state"] == "complete" and meta["n_runs"] == len(EXPECTED_JOBS)
    assert meta["status_counts"] == {"ok": len(EXPECTED_JOBS), "failed": 0, "skipped": 0}
    figures["wall_s"] = round(time.monotonic() - started, 1)
    record_property("fault_matrix", json.dumps(figures))
    line = ("fault matrix (SIGKILL): seed {seed}, {trials} trials, {faults_injected} faults injected, "
            "{results_lost} results lost, {corrupt_files} corrupt files, {tmp_files_left} temporary files left "
            "(ignored), {completed_sweeps} sweeps completed between kills, {wall_s} s").format(**figures)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        request.config.add_cleanup(lambda: tr.write_line(line))
    print("\n".join([*figures["log"], line]))
    assert figures["faults_injected"] >= MIN_FAULTS, figures
    assert figures["results_lost"] == 0 and figures["corrupt_files"] == 0, figures
