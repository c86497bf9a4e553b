"""How much the harness's own timing path costs, measured side by side in one run.

`make bench` (or `pytest benchmarks/`). Each benchmark records ratios in extra_info, computed from
the same repetitions, so they are comparable on a noisy shared machine:
  path_share  = 1 - llama.cpp's decode time (t_eval) / wall decode time (driver + sampling overhead),
                for the Python path and (when its library is usable) the native one
The two paths against each other, interleaved with intervals: benchmarks/test_native_vs_python.py.
"""

from __future__ import annotations

import pytest

from harness import engine
from harness.config import SamplingConfig, validate
from harness.gguf import read_gguf_info
from harness.hydra_conf import compose
from harness.plan import make_plan


def _cfg() -> dict:
    return compose(["workload=pp512_tg128", "runtime.n_ctx=1024"])


@pytest.fixture(scope="module")
def loaded(model_path):
    rc = validate(_cfg())
    plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
    eng = engine.Engine()
    lm, _ = eng.load(plan)
    yield rc, lm
    eng.unload()


def test_gguf_header_read(benchmark, model_path):
    info = benchmark(read_gguf_info, model_path)
    assert info.n_layers == 18 and info.n_vocab == 262144


@pytest.mark.parametrize("timing", ["python", "native"])
@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampled"])
def test_decode_tg32(benchmark, loaded, temperature, timing):
    """32 generated tokens after a 16-token prompt: wall decode vs llama.cpp's own decode time."""
    from harness.engine import native

    rc, lm = loaded
    if timing == "native" and not native.status().usable:
        pytest.skip(f"native timing path unusable: {native.status().reason}")
    generate = native.generate if timing == "native" else engine.generate
    s = SamplingConfig(temperature=temperature, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.0, seed=1)
    prompt = list(range(1000, 1016))
    reps = []

    def once():
        raw = generate(lm, text=None, tokens=prompt, add_bos=False, sampling=s, seed=1,
                       max_tokens=32, ignore_eos=True)
        reps.append(raw)
        return raw

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    wall = sum((r.token_ns[-1] - r.token_ns[0]) / 1e6 for r in reps)
    eng = sum(r.engine_eval_ms for r in reps)
    benchmark.extra_info["decode_tps_wall"] = sum(len(r.token_ids) - 1 for r in reps) / (wall / 1e3)
    benchmark.extra_info["decode_tps_engine"] = sum(r.engine_n_eval for r in reps) / (eng / 1e3)
    benchmark.extra_info["path_share"] = 1 - eng / wall
    benchmark.extra_info["timing_path"] = timing
    assert all(len(r.token_ids) == 32 for r in reps)
