"""Regression checks on the default model (Gemma 3 270M Q4_K_M) through the `harness_bench` fixture.

    pytest benchmarks/test_default_model.py --benchmark-autosave            # save a baseline
    pytest benchmarks/test_default_model.py --benchmark-compare --harness-fail-on decode_tps:-5%

pytest-benchmark's time per round is one generate call (prefill + all max_tokens tokens, seconds);
decode_tps, ttft_ms, prefill_tps, e2e_ms etc. are in each benchmark's extra_info, and each round's
values in extra_info["samples"], which `--harness-fail-on` compares (significant AND beyond the
threshold; pytest-benchmark's `mean:10%` compares means with no notion of noise).
`benchmarks/regression_gate.py` measures the gate's false alarms and power on this benchmark.
"""

from __future__ import annotations

# 10 timed rounds: 0 false alarms in 20 A/A pairs and 20 of 20 11% slowdowns caught here
# (benchmarks/regression_gate.py; README "Regression checks").
REPS = ("bench.repetitions=10", "bench.warmup=1")


def test_short_chat_decode64(harness_bench):
    """A short chat turn (chat template applied), 64 generated tokens (fixed length)."""
    info = harness_bench("workload=short_chat", "workload.max_tokens=64", *REPS)
    assert info["n_gen_tokens"] == 64
    assert info["decode_tps"] > 0 and info["ttft_ms"] > 0


def test_pp512_tg128(harness_bench):
    """llama-bench's default tests in one call: 512 random prompt tokens, then 128 generated."""
    info = harness_bench("workload=pp512_tg128", "runtime.n_ctx=1024", *REPS)
    assert info["n_prompt_tokens"] == 512 and info["n_gen_tokens"] == 128
    assert info["prefill_tps"] > 0 and info["decode_tps"] > 0
