"""The VRAM estimate against llama.cpp's own accounting: the KV cache and compute buffer sizes that
llama.cpp logs when it loads the default model (on the CPU here, the same graph and cache code as
on a GPU, where the whole model would be offloaded)."""

from __future__ import annotations

import re

import pytest

from harness import vram
from harness.engine import llama
from harness.modelfile import default_model_path
from harness.plan import LoadKey

pytestmark = pytest.mark.slow
MIB = 2**20


def _logged(log: str, what: str) -> float:
    return sum(float(m) for m in re.findall(rf"{what} buffer size =\s+([\d.]+) MiB", log))


@pytest.mark.parametrize("n_ctx,n_ubatch", [(2048, 512), (8192, 128)])
def test_estimate_matches_llama_cpp_buffers(n_ctx, n_ubatch):
    pytest.importorskip("llama_cpp")
    path = str(default_model_path())
    key = LoadKey(model_path=path, n_gpu_layers=0, n_ctx=n_ctx, n_batch=n_ubatch, n_ubatch=n_ubatch,
                  n_threads=None, n_threads_batch=None, flash_attn="off", type_k="f16", type_v="f16",
                  use_mmap=True, offload_kqv=True)
    lm = llama._load(key, "gemma3")
    try:
        kv_logged, compute_logged = _logged(lm.load_log, "KV"), _logged(lm.load_log, "compute")
    finally:
        lm.llm.close()
    est = vram.estimate(vram.shape(path), n_gpu_layers=19, n_ctx=n_ctx, n_ubatch=n_ubatch)
    assert kv_logged > 0 and compute_logged > 0, lm.load_log[-2000:]
    assert est.kv_bytes / MIB == pytest.approx(kv_logged, rel=0.001)
    # the estimate takes the largest buffer plus the ubatch's hidden states: within 3% above
    assert compute_logged <= est.compute_bytes / MIB <= 1.03 * compute_logged
