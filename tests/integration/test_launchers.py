"""Sweeps through Hydra launcher plugins: hydra-submitit-launcher's local executor runs the points
as parallel job processes writing into one sweep folder (the real engine, model and Hydra; the
fake libnvidia-ml through the real pynvml path, to see which GPU each job samples); the device
lock refuses jobs that would measure on one device at once; the Slurm preset composes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, load_schema, run_records

sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555"}
L40 = {"name": "NVIDIA L40S", "uuid": "GPU-99999999-8888-7777-6666-555555555555"}
SEEDS = "sampling.seed=1,2,3"  # two batches of at most 2 jobs: one of two at once, then one


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


def _sweep(harness_cli, tmp_path, *overrides, env=None, sweep="s"):
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return harness_cli("run", "-m", "hydra/launcher=local", *TINY, *overrides, "report.auto=false",
                       f"results_dir={tmp_path / 'res'}", f"sweep_name={sweep}", cwd=cwd, env=env)


@pytest.mark.slow
def test_local_launcher_runs_parallel_jobs_into_one_sweep(tmp_path, harness_cli, fake_lib, model_path):
    # Two GPUs; the parent is pinned to the second. submitit's local executor gives every job
    # GPU 0 (gpus_per_node: 1), and each job samples the GPU its launcher gave it.
    trace = fakenvml.write_trace(tmp_path / "trace", [H100, L40])
    env = {**fakenvml.env(fake_lib, trace), "CUDA_VISIBLE_DEVICES": "1"}
    r = _sweep(harness_cli, tmp_path, "hydra.sweeper.max_batch_size=2", "bench.allow_shared_device=true",
               SEEDS, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 ok, 0 failed, 0 skipped" in r.stdout

    sweep_dir = tmp_path / "res" / "s"
    recs = run_records(sweep_dir)
    assert sorted(rec["config"]["sampling"]["seed"] for rec in recs.values()) == [1, 2, 3]
    assert all(rec["status"] == "ok" for rec in recs.values())
    import jsonschema

    for rec in recs.values():
        jsonschema.validate(rec, load_schema())
        tel = rec["telemetry"]
        assert tel["cuda_visible_devices"] == "0" and tel["gpu"]["uuid"] == H100["uuid"]
        assert rec["provenance"]["device_lock"]["devices"] == ["cpu"]  # the CPU build runs on the CPU
    # Jobs ran at once: the two of a batch each saw the other hold the CPU, or took it first.
    pids = {rec["job_name"]: rec["provenance"]["device_lock"]["shared_with"].get("cpu") for rec in recs.values()}
    assert any(pids.values()), pids
    assert any("shared with another harness job" in w for rec in recs.values() for w in rec["warnings"])

    meta = json.loads((sweep_dir / "sweep.json").read_text())
    jsonschema.validate(meta, load_schema("sweep.schema.json"))
    assert meta["state"] == "complete" and meta["n_runs"] == 3
    assert meta["status_counts"] == meta["last_invocation"] == {"ok": 3, "failed": 0, "skipped": 0}
    assert sorted(j["job"] for j in meta["jobs"]) == sorted(recs)
    import pandas as pd

    df = pd.read_csv(sweep_dir / "runs.csv")
    assert sorted(df["job"]) == sorted(recs) and len(df) == 3
    # submitit's own files stay inside the sweep folder; nothing lands in the working directory.
    assert (sweep_dir / ".submitit").is_dir()
    assert list((tmp_path / "cwd").iterdir()) == []


@pytest.mark.slow
def test_jobs_on_one_device_at_once_are_refused_and_a_rerun_measures_them(tmp_path, harness_cli, model_path):
    r = _sweep(harness_cli, tmp_path, "hydra.sweeper.max_batch_size=2", "sampling.seed=1,2")
    assert r.returncode == 1, r.stderr[-3000:]
    recs = run_records(tmp_path / "res" / "s")
    busy = [rec for rec in recs.values() if rec["status"] == "failed"]
    assert len(recs) == 2 and len(busy) == 1, [(x["status"], x["error"]) for x in recs.values()]
    (ok,) = [rec for rec in recs.values() if rec["status"] == "ok"]
    assert ok["provenance"]["device_lock"] == {"devices": ["cpu"], "held": ["cpu"], "shared_with": {},
                                              "supported": True}
    assert busy[0]["error"]["type"] == "DeviceBusy" and busy[0]["error"]["phase"] == "load"
    assert busy[0]["error"]["message"].startswith("device cpu is in use by another harness job (pid ")
    assert busy[0]["error"]["message"].endswith("set bench.allow_shared_device=true to run anyway")
    assert "1 ok, 1 failed, 0 skipped" in r.stdout
    meta = json.loads((tmp_path / "res" / "s" / "sweep.json").read_text())
    assert meta["last_invocation"] == {"ok": 1, "failed": 1, "skipped": 0}

    # One job at a time: the refused point is measured, the done one skipped.
    r = _sweep(harness_cli, tmp_path, "hydra.sweeper.max_batch_size=1", "sampling.seed=1,2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 ok, 0 failed, 1 skipped" in r.stdout
    assert all(rec["status"] == "ok" for rec in run_records(tmp_path / "res" / "s").values())
    meta = json.loads((tmp_path / "res" / "s" / "sweep.json").read_text())
    assert meta["status_counts"] == {"ok": 2, "failed": 0, "skipped": 0}
    assert meta["last_invocation"] == {"ok": 1, "failed": 0, "skipped": 1}


def _launcher(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness import hydra_conf

    hydra_conf.register_resolvers()
    with initialize_config_dir(config_dir=hydra_conf.conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_preset_takes_partition_account_and_resources_from_the_environment(monkeypatch, tmp_path):
    for k, v in {"SBATCH_PARTITION": "gpu-h100", "SBATCH_ACCOUNT": "proj42", "HARNESS_SLURM_CPUS": "12",
                 "HARNESS_SLURM_MEM_GB": "64", "HARNESS_JOB_TIMEOUT_MIN": "30"}.items():
        monkeypatch.setenv(k, v)
    lc = _launcher(["hydra/launcher=slurm", f"results_dir={tmp_path}", "sweep_name=sl"])
    assert lc["_target_"].endswith("SlurmLauncher")
    assert (lc["partition"], lc["account"]) == ("gpu-h100", "proj42")
    # GPUs unset: fitted at launch to the partition (one per job on GPU nodes, harness/slurm.py)
    assert (lc["gpus_per_node"], lc["tasks_per_node"], lc["nodes"]) == (None, 1, 1)
    assert (lc["cpus_per_task"], lc["mem_gb"], lc["timeout_min"]) == (12, 64, 30)
    assert lc["submitit_folder"] == f"{tmp_path}/sl/.submitit/%j"


def test_slurm_preset_defaults_and_overrides(monkeypatch, tmp_path):
    for k in ("SBATCH_PARTITION", "SBATCH_ACCOUNT", "HARNESS_SLURM_CPUS", "HARNESS_SLURM_MEM_GB",
              "HARNESS_SLURM_GPUS", "HARNESS_JOB_TIMEOUT_MIN"):
        monkeypatch.delenv(k, raising=False)
    lc = _launcher(["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=4",
                    f"results_dir={tmp_path}", "sweep_name=sl"])
    assert (lc["partition"], lc["account"], lc["cpus_per_task"]) == ("debug", None, 4)
    assert (lc["mem_gb"], lc["timeout_min"]) == (None, 0)  # fitted to the partition at launch


def test_local_preset_keeps_submitit_files_in_the_sweep_folder(tmp_path):
    lc = _launcher(["hydra/launcher=local", f"results_dir={tmp_path}", "sweep_name=lo"])
    assert lc["_target_"].endswith("LocalLauncher") and lc["gpus_per_node"] == 1
    assert lc["submitit_folder"] == f"{tmp_path}/lo/.submitit/%j"


def test_cli_shows_the_launcher_config_after_the_overrides(tmp_path, harness_cli):
    # The CLI adds sweep_name next to the overrides, not after `--cfg hydra` where Hydra refuses it.
    r = harness_cli("run", "hydra/launcher=slurm", "hydra.launcher.partition=debug", "--cfg", "hydra", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "partition: debug" in r.stdout and "SlurmLauncher" in r.stdout
    assert list(tmp_path.iterdir()) == []
