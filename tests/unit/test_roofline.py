"""Roofline: decode ceiling from GPU memory bandwidth and the model's weight bytes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.measure import roofline

H100_PEAK = 5120 / 8 * 2619e6 * 2 / 1e9  # GB/s from bus width and max memory clock


def _plan(ngl: int, layers: int = 19, weights: int = 246_587_904):
    return SimpleNamespace(n_gpu_layers_effective=ngl, n_offloadable_layers=layers,
                           gguf=SimpleNamespace(tensor_data_bytes=weights))


def _rec(decode_tps):
    return SimpleNamespace(aggregates={"decode_tps": {"mean": decode_tps}} if decode_tps else {})


def test_full_offload_ceiling_and_efficiency():
    r = roofline(_rec(900.0), _plan(19), {"peak_mem_bandwidth_gbps": H100_PEAK})
    ceiling = H100_PEAK * 1e9 / 246_587_904
    assert r["decode_tps_ceiling"] == pytest.approx(ceiling)  # ~13,600 tok/s for a 247 MB model
    assert r["bandwidth_efficiency"] == pytest.approx(900.0 / ceiling)
    assert r["reason"] is None and r["bytes_per_token_min"] == 246_587_904


def test_partial_offload_says_so():
    r = roofline(_rec(300.0), _plan(9), {"peak_mem_bandwidth_gbps": H100_PEAK})
    assert r["decode_tps_ceiling"] is not None and "partial offload" in r["reason"]


def test_cpu_run_and_unknown_bandwidth_have_no_ceiling():
    cpu = roofline(_rec(45.0), _plan(0), {"peak_mem_bandwidth_gbps": H100_PEAK})
    assert cpu["decode_tps_ceiling"] is None and "CPU run" in cpu["reason"]
    unknown = roofline(_rec(45.0), _plan(19), None)
    assert unknown["decode_tps_ceiling"] is None and "unknown" in unknown["reason"]
    no_decode = roofline(_rec(None), _plan(19), {"peak_mem_bandwidth_gbps": H100_PEAK})
    assert no_decode["decode_tps_ceiling"] is not None and no_decode["bandwidth_efficiency"] is None
