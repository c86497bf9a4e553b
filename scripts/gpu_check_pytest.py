"""pytest plugin of the GPU check's rehearsal (`scripts/gpu_check.sh --rehearse`, loaded with
`-p gpu_check_pytest`): benchmarks/test_vs_llama_bench.py at sizes a small CPU machine runs in about
a minute, so the rehearsal goes through the same benchmark, binary lookup, JSON and summary as the
GPU run without its pp512 / tg128 x 5 repetitions x rounds, which take many minutes on two cores.

    GPU_CHECK_LB_SIZES=PROMPT,GEN,REPS   prompt tokens, generated tokens, repetitions on both sides

Without the variable the plugin does nothing; the GPU run never loads it. It sets the benchmark
module's sizes (N_PROMPT, N_GEN, REPS: what llama-bench is given and what the test checks) and
adds the same sizes to the harness's side (workload.prompt_tokens, workload.max_tokens), so both
tools still measure the same work. If the benchmark stops having those names, the rehearsal fails
here, by name, instead of running at full size.
"""

from __future__ import annotations

import os

import pytest

ENV = "GPU_CHECK_LB_SIZES"
MODULE = "test_vs_llama_bench"
SIZES = ("N_PROMPT", "N_GEN", "REPS")


def _sizes() -> tuple[int, int, int] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        n_prompt, n_gen, reps = (int(x) for x in raw.split(","))
    except ValueError:
        raise pytest.UsageError(f"{ENV} must be PROMPT,GEN,REPS (three integers), got {raw!r}") from None
    if min(n_prompt, n_gen, reps) < 1:
        raise pytest.UsageError(f"{ENV}: every size must be at least 1, got {raw!r}")
    return n_prompt, n_gen, reps


def pytest_collection_modifyitems(session, config, items):
    sizes = _sizes()
    if sizes is None:
        return
    n_prompt, n_gen, reps = sizes
    for module in {item.module for item in items if item.module.__name__.rsplit(".", 1)[-1] == MODULE}:
        missing = [name for name in (*SIZES, "_run") if not hasattr(module, name)]
        if missing:
            raise pytest.UsageError(f"{ENV}: {module.__name__} has no {', '.join(missing)}; update {__file__}")
        module.N_PROMPT, module.N_GEN, module.REPS = n_prompt, n_gen, reps
        run = module._run

        def run_at_size(args: list[str], _run=run):
            if any(a.startswith("workload=") for a in args):  # the harness's side
                args = [*args, f"workload.prompt_tokens={n_prompt}", f"workload.max_tokens={n_gen}"]
            return _run(args)

        module._run = run_at_size
