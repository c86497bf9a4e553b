"""The engine and workloads in-process, on the real default model (loaded once per module)."""

from __future__ import annotations

import pytest

from harness import engine
from harness.config import validate
from harness.hydra_conf import compose
from harness.plan import make_plan
from harness.workload import build_prompt

pytestmark = pytest.mark.slow


def _cfg(**overrides) -> dict:
    """The composed default config (real Hydra), with `section__key=value` changes applied."""
    d = compose()
    for key, value in overrides.items():
        section, name = key.split("__")
        d[section][name] = value
    return d


@pytest.fixture(scope="module")
def eng():
    e = engine.Engine()
    yield e
    e.unload()


@pytest.fixture(scope="module")
def loaded(model_path, eng):
    rc = validate(_cfg(runtime__n_ctx=512))
    plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
    lm, reused = eng.load(plan)
    return rc, plan, lm, reused


def _gen(lm, rc, prompt, seed=1, max_tokens=12, ignore_eos=True, sampling=None):
    return engine.generate(lm, text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos,
                           sampling=sampling or rc.sampling, seed=seed, max_tokens=max_tokens,
                           ignore_eos=ignore_eos)


def test_load_is_timed_and_reused_for_equal_keys(loaded, eng):
    rc, plan, lm, reused = loaded
    assert reused is False and lm.load_ms > 0
    assert lm.n_ctx >= 512 and lm.n_vocab == 262144
    assert lm.eog_tokens  # gemma has end-of-generation tokens (eos, end_of_turn)
    again, reused2 = eng.load(plan)
    assert reused2 is True and again is lm


def test_fixed_length_generation_bans_end_of_generation_tokens(loaded):
    rc, _, lm, _ = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    # Greedy decoding of a tiny model ends its turn quickly; with ignore_eos it may not.
    greedy = rc.sampling.__class__(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=0)
    raw = _gen(lm, rc, prompt, max_tokens=48, sampling=greedy)
    assert len(raw.token_ids) == 48
    assert not set(raw.token_ids) & set(lm.eog_tokens)


def test_timestamps_are_ordered_and_prefill_is_measured_every_repetition(loaded):
    rc, _, lm, _ = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    for seed in (1, 2):
        raw = _gen(lm, rc, prompt, seed=seed)
        assert raw.t_request_ns < raw.t_prefill_end_ns <= raw.token_ns[0]
        assert list(raw.token_ns) == sorted(raw.token_ns)
        # The KV cache was cleared: the whole prompt was evaluated again, no prefix reuse.
        assert raw.engine_n_prompt_eval == raw.n_prompt_tokens == prompt.n_tokens
        assert raw.engine_prompt_eval_ms > 0
        assert raw.engine_n_eval == len(raw.token_ids) - 1


def test_same_seed_same_tokens_different_seed_different_tokens(loaded):
    rc, _, lm, _ = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    hot = rc.sampling.__class__(temperature=1.5, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=0)
    a = _gen(lm, rc, prompt, seed=7, max_tokens=24, sampling=hot)
    b = _gen(lm, rc, prompt, seed=7, max_tokens=24, sampling=hot)
    c = _gen(lm, rc, prompt, seed=8, max_tokens=24, sampling=hot)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_prompt_longer_than_context_fails_cleanly(loaded):
    rc, _, lm, _ = loaded
    prompt = build_prompt(validate(_cfg(workload__prompt="word " * 600, workload__chat_template=False)).workload,
                          lm, seed=0)
    with pytest.raises(engine.PromptTooLong, match="does not fit"):
        _gen(lm, rc, prompt)
    # The context is still usable afterwards.
    ok = _gen(lm, rc, build_prompt(rc.workload, lm, seed=0), max_tokens=4)
    assert len(ok.token_ids) == 4


def test_workload_prompts(loaded):
    rc, _, lm, _ = loaded
    chat = build_prompt(rc.workload, lm, seed=0)
    assert chat.chat_template_applied and "<start_of_turn>user" in chat.text
    assert chat.text.count("<start_of_turn>") == 2  # user turn + the model turn it opens
    rnd = validate(_cfg(workload__kind="random_tokens", workload__prompt_tokens=300, workload__chat_template=False))
    p = build_prompt(rnd.workload, lm, seed=3)
    assert p.tokens is not None and p.n_tokens == 300 and p.tokens[0] == lm.bos_token
    assert not set(p.tokens[1:]) & (set(lm.eog_tokens) | {lm.bos_token})
    assert build_prompt(rnd.workload, lm, seed=3).tokens == p.tokens  # seeded
    assert build_prompt(rnd.workload, lm, seed=4).tokens != p.tokens
    fill = validate(_cfg(workload__kind="fill_to_length", workload__prompt_tokens=400,
                         workload__prompt="The quick brown fox jumps over the lazy dog. " * 3))
    f = build_prompt(fill.workload, lm, seed=0)
    assert 300 <= f.n_tokens <= 400
    raw = _gen(lm, rc, f, max_tokens=4)
    assert raw.n_prompt_tokens == f.n_tokens  # the count we planned is what the engine saw


@pytest.mark.gpu
def test_full_offload_on_a_cuda_build(model_path):
    """With a CUDA build on a GPU machine, `all` offloads every layer plus the output layer."""
    if not engine.gpu_offload_supported():
        pytest.skip("this llama.cpp build has no GPU backend")
    rc = validate(_cfg(runtime__n_ctx=512, runtime__require_gpu=True))
    plan = make_plan(rc, gpu_offload_supported=True, model_path=model_path)
    assert plan.n_gpu_layers_effective == plan.gguf.n_layers + 1
    eng = engine.Engine()
    lm, _ = eng.load(plan)
    try:
        assert "CUDA" in lm.load_log
        raw = _gen(lm, rc, build_prompt(rc.workload, lm, seed=0), max_tokens=16)
        assert len(raw.token_ids) == 16
    finally:
        eng.unload()
