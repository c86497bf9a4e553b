"""VRAM pre-flight: the estimate from a GGUF header, the verdict against free memory, and the free
memory read through the real pynvml code path against the fake libnvidia-ml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import vram
from harness.modelfile import default_model_path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

MIB = 2**20


@pytest.fixture(scope="module")
def model() -> str:
    try:
        return str(default_model_path())
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"default model not available: {e}")


@pytest.fixture(scope="module")
def shape(model) -> vram.Shape:
    return vram.shape(model)


def test_shape_of_gemma3_270m(shape):
    assert (shape.n_layers, shape.n_embd, shape.n_head, shape.key_length, shape.n_vocab) == (18, 640, 4, 256, 262144)
    assert set(shape.n_head_kv) == {1}
    # the output is tied to the token embedding: llama.cpp puts a copy on the GPU with the output layer
    assert shape.output_bytes > 100 * MIB
    assert all(b > 0 for b in shape.layer_bytes)


def test_kv_cache_matches_llama_cpp_accounting(shape):
    # llama.cpp's log for this model (CPU, f16 cache): 512 cells -> 1.50 + 7.50 MiB, 2048 -> 6 + 30,
    # 8192 -> 24 + 120 (3 global + 15 sliding-window layers, full-size SWA cache)
    for n_ctx, mib in ((512, 9.0), (2048, 36.0), (8192, 144.0), (1000, 18.0)):  # 1000 pads to 1024
        e = vram.estimate(shape, n_gpu_layers=19, n_ctx=n_ctx, n_ubatch=512)
        assert e.kv_bytes == mib * MIB, n_ctx


def test_offload_split_follows_llama_cpp(shape):
    full = vram.estimate(shape, n_gpu_layers=19, n_ctx=2048, n_ubatch=512)
    blocks = vram.estimate(shape, n_gpu_layers=18, n_ctx=2048, n_ubatch=512)
    half = vram.estimate(shape, n_gpu_layers=9, n_ctx=2048, n_ubatch=512)
    none = vram.estimate(shape, n_gpu_layers=0, n_ctx=2048, n_ubatch=512)
    assert full.output_offloaded and not blocks.output_offloaded
    assert full.weights_bytes - blocks.weights_bytes == shape.output_bytes
    assert half.n_layers_offloaded == 9 and half.weights_bytes == sum(shape.layer_bytes[9:])
    assert half.kv_bytes * 2 == blocks.kv_bytes
    # the logits (262144 x 512 floats = 512 MiB) are on the GPU only with the output layer
    assert full.compute_bytes >= 512 * MIB > blocks.compute_bytes
    assert none.total_bytes == 0
    # quantised and host-side caches
    q8 = vram.estimate(shape, n_gpu_layers=19, n_ctx=2048, n_ubatch=512, type_k="q8_0", type_v="q8_0")
    assert q8.kv_bytes == 36 * MIB * 34 / 32 / 2
    assert vram.estimate(shape, n_gpu_layers=19, n_ctx=2048, n_ubatch=512, offload_kqv=False).kv_bytes == 0


def test_verdicts():
    e = vram.Estimate(weights_bytes=600 * MIB, kv_bytes=200 * MIB, compute_bytes=300 * MIB, context_bytes=512 * MIB,
                      n_layers_offloaded=10, output_offloaded=True)
    assert vram.verdict(e, 799 * MIB) == "no"
    assert vram.verdict(e, 800 * MIB) == "close"
    assert vram.verdict(e, int(1612 / 0.9) * MIB) == "close"
    assert vram.verdict(e, 2000 * MIB) == "fits"
    assert vram.verdict(e, None) == "unknown"
    d = e.to_dict()
    assert d["required_mib"] == 800 and d["total_mib"] == 1612 and d["weights_mib"] == 600


# --- through pynvml against the fake driver library ----------------------------------------------

@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


CHILD = """
import json, sys
from harness import vram
from harness.plan import LoadKey
out = []
for n_ctx, ngl in json.loads(sys.argv[2]):
    key = LoadKey(model_path=sys.argv[1], n_gpu_layers=ngl, n_ctx=n_ctx, n_batch=512, n_ubatch=512,
                  n_threads=None, n_threads_batch=None, flash_attn="off", type_k="f16", type_v="f16",
                  use_mmap=True, offload_kqv=True)
    evicted = []
    try:
        r = vram.preflight(key, evict=lambda: evicted.append(1) or False)
        out.append({"ok": r, "evict_tried": bool(evicted)})
    except vram.VramInsufficient as e:
        out.append({"refused": str(e), "evict_tried": bool(evicted)})
out.append(vram.gpu_memory())
print(json.dumps(out))
"""


def _child(lib, trace, model, calls, visible=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(fakenvml.env(lib, trace))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    r = subprocess.run([sys.executable, "-c", CHILD, model, json.dumps(calls)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_preflight_against_fake_nvml(tmp_path, fake_lib, model):
    # GPU 0: 1 GiB with 300 MiB used; GPU 1: 80 GiB, empty
    trace = fakenvml.write_trace(tmp_path / "t", gpus=[
        {"name": "NVIDIA Small", "memory_total_mib": 1024}, {"name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559}],
        rows=[{"t_ms": 0, "gpu": 0, "mem_used_mib": 300}, {"t_ms": 0, "gpu": 1, "mem_used_mib": 0}])
    calls = [(2048, 19), (32768, 19), (2048, 9), (2048, 0)]
    small = _child(fake_lib, trace, model, calls, visible="0")
    fits_full, huge_ctx, half, cpu, mem = small
    assert mem == {"free_bytes": 724 * MIB, "total_bytes": 1024 * MIB, "gpus": [0]}
    # all offloaded at 2048: ~ 240 MiB weights + 36 MiB KV fit in 724 MiB, but not with the
    # 512 MiB of logits and the CUDA context: "close"
    assert fits_full["ok"]["verdict"] == "close" and fits_full["evict_tried"]
    assert fits_full["ok"]["free_mib_before"] == 724.0 and fits_full["ok"]["gpus"] == [0]
    # 32768 cells: 576 MiB of KV plus the weights cannot fit: refused, one line, after trying to evict
    assert huge_ctx["evict_tried"] and "\n" not in huge_ctx["refused"]
    assert "needs at least" in huge_ctx["refused"] and "GPU 0 has 724 MiB free of 1,024 MiB" in huge_ctx["refused"]
    assert half["ok"]["verdict"] in ("fits", "close")
    assert cpu["ok"] is None  # nothing offloaded: no check
    # every GPU llama.cpp sees (CUDA_VISIBLE_DEVICES unset): the free memory of both
    both = _child(fake_lib, trace, model, [(32768, 19)])
    assert both[0]["ok"]["verdict"] == "fits" and both[-1]["gpus"] == [0, 1]
    assert both[-1]["free_bytes"] == (724 + 81559) * MIB
    # a UUID in CUDA_VISIBLE_DEVICES, as Slurm sets it
    uuid1 = "GPU-00000000-0000-0000-0000-000000000001"
    assert _child(fake_lib, trace, model, [], visible=uuid1)[-1]["gpus"] == [1]


def test_no_nvml_no_verdict(tmp_path, fake_lib, model):
    out = _child(fake_lib, None, model, [(2048, 19)])
    assert out[0]["ok"]["verdict"] == "unknown" and out[-1] is None


def test_schema_takes_the_vram_record_of_a_gpu_load():
    import copy

    import jsonschema

    schema = json.loads((ROOT / "results/schema/run.schema.json").read_text())
    rec = json.loads((ROOT / "tests/data/run_v1.json").read_text())
    e = vram.estimate(vram.Shape(n_layers=2, n_embd=64, n_head=2, n_head_kv=(1, 1), key_length=32, value_length=32,
                                 n_ff=128, n_vocab=1000, layer_bytes=(MIB, MIB), output_bytes=MIB),
                      n_gpu_layers=3, n_ctx=512, n_ubatch=512)
    rec["load"]["vram"] = {"estimate": e.to_dict(), "verdict": "fits", "free_mib_before": 80000.0,
                           "total_mib": 81559.0, "gpus": [0], "measured_mib": 900.5}
    jsonschema.validate(rec, schema)
    bad = copy.deepcopy(rec)
    bad["load"]["vram"]["verdict"] = "no"  # a load that cannot fit never happens, so never has a record
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
