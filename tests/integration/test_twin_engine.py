"""Performance twins load and run in llama.cpp: the 270M twin made from the real file's header
(whole, and cut short after its header), and the 1B twin made from its spec. Each generates a few
tokens greedily; every logit must be finite."""

from __future__ import annotations

import numpy as np
import pytest

from harness.gguf import read_gguf_header, read_gguf_info
from harness.twin import make_twin, twin_marker

pytestmark = pytest.mark.slow


def _generate(path, n_tokens: int, n_ctx: int = 64) -> list[np.ndarray]:
    """Greedy generation of `n_tokens` (end-of-generation tokens included: the count is fixed);
    the logits of every step."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(llm.tokenize(b"The capital of France is"))
        steps = []
        for _ in range(n_tokens):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            steps.append(logits)
            llm.eval([int(np.argmax(logits))])
        return steps
    finally:
        llm.close()


def _check(steps: list[np.ndarray], n_vocab: int) -> None:
    for logits in steps:
        assert logits.shape == (n_vocab,)
        assert np.isfinite(logits).all()
        assert logits.std() > 0  # not a constant (dead) output


def test_270m_twin_from_header_and_from_a_cut_copy(model_path, tmp_path):
    real = read_gguf_header(model_path)
    cut = tmp_path / "head.gguf"
    with open(model_path, "rb") as f:
        cut.write_bytes(f.read(real.header_bytes + (1 << 20)))
    whole, head = tmp_path / "twin.gguf", tmp_path / "twin-from-head.gguf"
    info = make_twin(model_path, whole, seed=0)
    make_twin(cut, head, seed=0)
    assert whole.read_bytes() == head.read_bytes()  # the header is all a twin needs
    assert info["twin_of"] == "Gemma 3 270m" and twin_marker(whole)["source_sha256"] == info["source_sha256"]
    assert [t for t in read_gguf_header(whole).tensors] == list(real.tensors)
    _check(_generate(whole, 8), 262144)


def test_1b_twin_from_spec_runs(tmp_path):
    path = tmp_path / "gemma3_1b-twin.gguf"
    info = make_twin("gemma3_1b", path, seed=0)
    assert info["source_kind"] == "spec" and info["n_params"] == pytest.approx(1.0e9, rel=0.01)
    gi = read_gguf_info(path)
    assert (gi.architecture, gi.n_layers, gi.n_embd, gi.quantization) == ("gemma3", 26, 1152, "Q4_K_M")
    _check(_generate(path, 4, n_ctx=32), 262144)
