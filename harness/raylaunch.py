"""Sweep points as Ray tasks (`hydra/launcher=ray`): hydra-ray-launcher's RayLauncher, told which
cluster to use before it starts Ray.

- `address: null` joins the cluster that `ray start` runs on this machine when it answers, and
  otherwise starts a new local Ray for the sweep (stopped when the sweep ends). `ray start` leaves
  its address in `<tmp>/ray/ray_current_cluster` (<tmp>: RAY_TMPDIR, TMPDIR or /tmp), and stopping
  the cluster other than by `ray stop` leaves the file behind: a file whose address does not
  answer is stale and ignored (said in the log), where Ray itself would try to join the dead
  cluster.
- `address: auto` joins the cluster of that file, and stops in one line (exit 2) when the file is
  stale; without the file Ray looks for a cluster itself. Any other address is passed to Ray.
- Joining a running cluster takes none of the settings that size a new one (object_store_memory,
  num_cpus, num_gpus, resources, the dashboard's): they are left out (hydra-ray-launcher would
  otherwise add a 75 MB object store, which Ray refuses when it joins).
- `remote.num_gpus: null`: one GPU per point where the cluster has GPUs (Ray then sets each task's
  CUDA_VISIBLE_DEVICES, which telemetry samples and the device lock keys on), none elsewhere.

Each task runs one point start to end and writes its own folder; Ray keeps its logs in its own
temporary folder, outside results_dir.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

import ray
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_ray_launcher import ray_launcher
from omegaconf import OmegaConf

log = logging.getLogger("harness")

# ray.init arguments that size a new cluster; Ray refuses them when it joins a running one.
NEW_CLUSTER_ONLY = ("object_store_memory", "num_cpus", "num_gpus", "resources", "include_dashboard",
                    "dashboard_host", "dashboard_port", "_system_config", "_memory", "labels")


class RayRefused(Exception):
    """The cluster to join cannot be used. `str()` is the one line printed."""


def address_file() -> Path:
    """Where `ray start` leaves the address of the cluster it started on this machine."""
    env = os.environ
    tmp = env.get("RAY_TMPDIR") or (env.get("TMPDIR") if sys.platform.startswith("linux") else None) or "/tmp"
    return Path(tmp) / "ray" / "ray_current_cluster"


def answers(address: str, timeout_s: float = 1.0) -> bool:
    """Does something listen at "host:port"?"""
    host, _, port = address.strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def choose_address(address: str | None, file: Path) -> str:
    """The address to give ray.init: a running cluster's, or "local" for a new one (see the module
    docstring). Raises RayRefused for `auto` with a stale address file."""
    if address not in (None, "auto"):
        return address
    try:
        recorded = file.read_text().strip()
    except OSError:
        recorded = ""
    if recorded and answers(recorded):
        return recorded
    if recorded:
        if address == "auto":
            raise RayRefused(f"hydra.launcher.ray.init.address: auto, but the cluster recorded in {file} "
                             f"({recorded}) does not answer (stopped without `ray stop`?); start one with "
                             "`ray start --head`, or leave the address null for a new local Ray")
        log.warning("%s names %s, which does not answer (a stopped cluster): starting a new local Ray",
                    file, recorded)
    return "auto" if address == "auto" else "local"


class RayLauncher(ray_launcher.RayLauncher):
    """See the module docstring. Registered with Hydra as hydra_plugins.harness.RayLauncher
    (harness.launcher.register)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        cfg: dict[str, Any] = OmegaConf.to_container(self.ray_cfg, resolve=True)  # type: ignore[assignment]
        init, remote = dict(cfg.get("init") or {}), dict(cfg.get("remote") or {})
        try:
            init["address"] = choose_address(os.environ.get("RAY_ADDRESS") or init.get("address"), address_file())
        except RayRefused as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if init["address"] != "local":
            dropped = [k for k in NEW_CLUSTER_ONLY if init.pop(k, None) is not None]
            if dropped:
                log.warning("joining the Ray cluster at %s: %s left out (they size a new cluster)",
                            init["address"], ", ".join(dropped))
            init["object_store_memory"] = None  # present, so that hydra-ray-launcher adds no size
        if not ray.is_initialized():
            ray.init(**init)
        if remote.get("num_gpus") is None:
            gpus = ray.cluster_resources().get("GPU", 0)
            remote.pop("num_gpus", None)
            if gpus:
                remote["num_gpus"] = 1
        ctx = ray.get_runtime_context()
        log.info("Ray cluster %s (%s): %s per point", init["address"], ctx.gcs_address,
                 ", ".join(f"{k}={v}" for k, v in sorted(remote.items())) or "Ray's defaults")
        self.ray_cfg = OmegaConf.create({"init": init, "remote": remote})
        return super().launch(job_overrides, initial_job_idx)


def plugin_names() -> dict[str, Any]:
    """Hydra plugin name -> class, for harness.launcher.register."""
    return {"hydra_plugins.harness.RayLauncher": RayLauncher}
