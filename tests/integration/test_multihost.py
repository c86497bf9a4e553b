"""Sweeps from several hosts merged by `harness analyze`: one table, statistics grouped by hardware
and never pooled across it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from conftest import ROOT, run_harness

GOLDEN = ROOT / "tests" / "data" / "ingest" / "runs" / "s1" / "ok_job" / "run.json"


def _host_sweep(root: Path, host: str, cpu: str, gpu: str | None, sweep: str) -> Path:
    """A copy of a recorded run as if a sweep on another machine had written it."""
    rec = json.loads(GOLDEN.read_text())
    rec["sweep_name"] = sweep
    rec["provenance"]["host"].update(hostname=host, cpu_model=cpu)
    if gpu:
        rec["provenance"]["gpu"] = {"available": True, "reason": None, "gpus": [{"index": 0, "name": gpu}]}
    job = root / sweep / rec["job_name"]
    job.mkdir(parents=True)
    (job / "run.json").write_text(json.dumps(rec))
    return root / sweep


def test_analyze_merges_sweeps_of_two_hosts_and_groups_by_hardware(tmp_path):
    a = _host_sweep(tmp_path / "node-a", "node-a", "AMD EPYC 9654", "NVIDIA H100 80GB HBM3", "sweep-a")
    b = _host_sweep(tmp_path / "node-b", "node-b", "Intel Xeon Platinum 8480+", "NVIDIA A100-SXM4-80GB", "sweep-b")
    c = _host_sweep(tmp_path / "node-c", "node-c", "AMD EPYC 9654", "NVIDIA H100 80GB HBM3", "sweep-c")
    out = tmp_path / "merged"
    p = run_harness("analyze", str(a), str(b), str(c), "--out", str(out), cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr

    runs = pd.read_parquet(out / "runs.parquet")
    assert set(runs["sweep"]) == {"sweep-a", "sweep-b", "sweep-c"}
    configs = pd.read_csv(out / "configurations.csv")
    # The same configuration on two kinds of hardware: two groups. Two nodes of one kind: one group,
    # whose samples are pooled (n_samples counts the repetitions of both).
    groups = configs.groupby("hardware")["n_samples"].sum()
    assert set(groups.index) == {"AMD EPYC 9654 | NVIDIA H100 80GB HBM3",
                                 "Intel Xeon Platinum 8480+ | NVIDIA A100-SXM4-80GB"}
    per_run = len(json.loads(GOLDEN.read_text())["repetitions"])
    assert groups["AMD EPYC 9654 | NVIDIA H100 80GB HBM3"] == 2 * per_run
    assert groups["Intel Xeon Platinum 8480+ | NVIDIA A100-SXM4-80GB"] == per_run
    shutil.rmtree(out)
