"""The GPU check kit and its rehearsal, so the one call on a GPU machine does not rot.

`make gpu-kit` prepares gpu-kit/; `scripts/gpu_check.sh --rehearse` runs the GPU check's steps on
this CPU machine (a CPU build of the kit's source, the fake NVML describing an H200 for the sweep)
and writes the same summary. The engine build and the twins are cached under the harness cache by
their sources, so only the first run here builds (minutes); later runs take about the sweep and
the llama-bench comparison.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

KIT = ROOT / "gpu-kit"
STEPS = ("probe", "python-env", "twins", "build", "engine", "gpu-tests", "sweep", "llama-bench", "summary")
MIB = 2**20


def _tail(r: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((r.stdout + r.stderr).strip().splitlines()[-n:])


@pytest.fixture(scope="module")
def kit() -> Path:
    r = subprocess.run(["make", "-s", "gpu-kit"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, _tail(r)
    assert "carry" in r.stdout, r.stdout
    return KIT


def test_kit_holds_what_travels_within_its_sizes(kit):
    source = sorted(kit.glob("llama_cpp_python-*-trim.tar.gz"))
    assert len(source) == 1
    assert source[0].stat().st_size <= 20 * MIB
    with tarfile.open(source[0]) as t:
        names = t.getnames()
    for must in ("/vendor/llama.cpp/ggml/src/ggml-cuda/CMakeLists.txt", "/vendor/llama.cpp/tools/llama-bench/llama-bench.cpp",
                 "/vendor/llama.cpp/common/CMakeLists.txt", "/llama_cpp/llama_cpp.py", "/CMakeLists.txt"):
        assert any(n.endswith(must) for n in names), must
    assert not any("/ggml-vulkan/" in n or "/tools/server/" in n or "/llama_cpp/lib/" in n for n in names)
    wheels = {p.name.split("-")[0].lower() for p in (kit / "wheels" / "cp312").glob("*.whl")}
    assert {"hydra_core", "omegaconf", "antlr4_python3_runtime", "jsonschema", "jsonschema_specifications",
            "referencing", "rpds_py", "orjson", "gguf", "diskcache"} <= wheels
    assert all(("cp312" in p.name or "none-any" in p.name) for p in (kit / "wheels" / "cp312").glob("*.whl"))
    header = list((kit / "models").glob("*.header.gguf"))
    assert len(header) == 1 and header[0].read_bytes()[:4] == b"GGUF" and header[0].stat().st_size < 16 * MIB
    tree = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                          check=True).stdout.split(b"\0")
    tree_bytes = sum((ROOT / os.fsdecode(p)).stat().st_size for p in tree if p and (ROOT / os.fsdecode(p)).is_file())
    kit_bytes = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    assert tree_bytes + kit_bytes < 64 * MIB


def test_make_gpu_kit_again_changes_nothing(kit):
    before = (kit / "MANIFEST.txt").read_text()
    r = subprocess.run(["make", "-s", "gpu-kit"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, _tail(r)
    assert (kit / "MANIFEST.txt").read_text() == before
    assert "trimming" not in r.stderr and "downloading" not in r.stderr


def _steps_table(md: str) -> dict[str, str]:
    out = {}
    for line in md.split("## Steps", 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in STEPS:
            out[cells[0]] = cells[1]
    return out


def test_rehearsal_runs_every_step_and_writes_the_summary(kit, tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_SCRATCH": str(scratch)}
    for k in ("LD_PRELOAD", "FAKE_NVML_TRACE", "FAKE_NVML_T0_NS", "HARNESS_MODELS", "PYTHONPATH"):
        env.pop(k, None)
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--rehearse"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, _tail(r)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "gpu_check.md", "results.tar.gz"]
    md = (out / "gpu_check.md").read_text()

    steps = _steps_table(md)
    assert set(steps) == set(STEPS) - {"summary"} and set(steps.values()) == {"ok"}, steps
    assert "Every step ok." in md

    # the sweep: every point measured, with numbers and the fake NVML's H200 readings
    sweep = md.split("## Sweep", 1)[1].split("\n## ", 1)[0]
    for model in ("gemma3_270m", "gemma3_1b"):
        assert f"### {model} (performance twin: synthetic weights)" in sweep
    rows = [line for line in sweep.splitlines() if re.match(r"\| (0|25%|all) \|", line)]
    assert len(rows) == 2 * 3 * 2  # models x offload levels x context sizes
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[3] == "ok", row
        decode, prefill, util, power, ept = (cells[i] for i in (4, 5, 7, 8, 9))
        assert float(decode.replace(",", "")) > 0 and float(prefill.replace(",", "")) > 0, row
        assert 35 <= float(util) <= 92 and 150 <= float(power) <= 420, row  # the trace's readings
        assert float(ept) > 0, row
        assert cells[10].startswith("null: "), row  # an H200 has no fan reading
    assert "NVIDIA H200" in md

    # VRAM: estimates of the offloading points (computed from the header on a CPU build)
    vram = md.split("## VRAM", 1)[1].split("\n## ", 1)[0]
    est_rows = [line for line in vram.splitlines() if re.match(r"\| gemma3_\w+ \| (25%|all) \|", line)]
    assert len(est_rows) == 2 * 2 * 2
    assert all(float(line.split("|")[4].strip().replace(",", "")) > 0 for line in est_rows)

    # the llama-bench comparison: ratios for the timing paths
    lb = md.split("## harness / llama-bench", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\| native \| prefill \| [\d,.]+ \| \d\.\d{3} \|", lb), lb
    assert re.search(r"\| python \| decode_engine \| [\d,.]+ \| \d\.\d{3} \|", lb), lb

    with tarfile.open(out / "results.tar.gz") as t:
        runs = [n for n in t.getnames() if n.endswith("/run.json")]
        assert len(runs) == 2 * 3 * 2
        rec = json.load(t.extractfile(runs[0]))
    assert rec["telemetry"]["gpu"]["name"] == "NVIDIA H200" and rec["provenance"]["model"]
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {s} =====" in log for s in STEPS if s != "summary")
