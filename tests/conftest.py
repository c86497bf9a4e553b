"""Shared fixtures: the real default model, and the harness CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "results" / "schema"

# Small budgets keep the real-model tests fast on 2 CPU cores.
TINY = ["workload.max_tokens=8", "bench.repetitions=2", "bench.warmup=0"]


@pytest.fixture(scope="session")
def model_path() -> Path:
    from harness.modelfile import default_model_path

    return default_model_path()


def run_harness(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m harness ARGS` the way a user runs `harness ARGS`."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    # Device locks of this test session only: another session on the host must not refuse ours.
    full_env.setdefault("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(r) -> str:
    """The single non-empty stderr line of a refused command (exit 2, no traceback)."""
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, model_path):
    """One real 2x2 sweep (runtime.n_ctx=256,512 x sampling.temperature=0.2,1.0; 3 repetitions of
    8 tokens) with its automatic report, made once per test session and shared: tests read it;
    a test that writes into a sweep works on `copy_sweep(tiny_sweep.dir, ...)`.
    Attributes: dir (the sweep folder), result (the CompletedProcess), args (the run's arguments)."""
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("tiny")
    args = ["run", "-m", "runtime.n_ctx=256,512", "sampling.temperature=0.2,1.0", *TINY, "bench.repetitions=3",
            f"results_dir={root}", "sweep_name=s"]
    r = run_harness(*args, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return SimpleNamespace(dir=root / "s", result=r, args=args)


def copy_sweep(sweep: Path, to: Path, *, report: bool = False) -> Path:
    """A copy of the sweep folder `sweep` as `to`/<its name> (without its report and analysis unless `report`)."""
    import shutil

    dst = to / sweep.name
    shutil.copytree(sweep, dst, ignore=None if report else shutil.ignore_patterns("report", "analysis"))
    return dst


@pytest.fixture
def harness_cli():
    return run_harness


def wait_for(predicate, timeout_s: float, tick_s: float = 0.05) -> bool:
    """Poll `predicate` every `tick_s` until it holds or `timeout_s` passes; its last answer."""
    import threading

    tick = threading.Event()
    for _ in range(int(timeout_s / tick_s)):
        if predicate():
            return True
        tick.wait(tick_s)
    return predicate()


def load_schema(name: str = "run.schema.json") -> dict:
    return json.loads((SCHEMA_DIR / name).read_text())


def run_records(sweep_dir: Path) -> dict[str, dict]:
    """job folder name -> parsed run.json, for every job folder of a sweep."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/run.json"))}
