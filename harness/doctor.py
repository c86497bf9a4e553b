"""`harness models` and `harness doctor`: what is configured and what this machine can do."""

from __future__ import annotations

import time
from pathlib import Path


def _model_configs() -> list[tuple[str, dict]]:
    from omegaconf import OmegaConf

    from .hydra_conf import conf_dir

    d = Path(conf_dir()) / "model"
    out = []
    for p in sorted(d.glob("*.yaml")):
        out.append((p.stem, OmegaConf.to_container(OmegaConf.load(p), resolve=False)))
    return out


def describe_model(name: str, raw: dict) -> dict:
    """Resolve a model config to its file and GGUF facts, or say why it does not resolve."""
    from .config import ModelConfig
    from .gguf import GGUFError, read_gguf_info
    from .modelfile import ModelNotFound, resolve

    files = raw.get("files") or ()
    mc = ModelConfig(name=raw.get("name", name), source=raw.get("source", "file"), path=raw.get("path"),
                     files=tuple([files] if isinstance(files, str) else files), package=raw.get("package"),
                     family=raw.get("family"), obtain=raw.get("obtain"))
    try:
        path = resolve(mc)
        info = read_gguf_info(path)
    except (ModelNotFound, GGUFError, OSError) as e:
        return {"name": name, "ok": False, "reason": str(e)}
    return {"name": name, "ok": True, "path": str(path), "size_mib": info.size_bytes / 2**20,
            "architecture": info.architecture, "n_layers": info.n_layers, "n_ctx_train": info.n_ctx_train,
            "quantization": info.quantization, "n_params_hint": info.name}


def cmd_models(args: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = [describe_model(n, raw) for n, raw in _model_configs()]
    t = Table(title="configured models (conf/model/)", title_justify="left")
    for c in ("model", "status", "file", "size MiB", "arch", "layers", "trained ctx", "quant"):
        t.add_column(c)
    for r in rows:
        if r["ok"]:
            t.add_row(r["name"], "[green]ok", r["path"], f"{r['size_mib']:.1f}", r["architecture"],
                      str(r["n_layers"]), str(r["n_ctx_train"]), str(r["quantization"]))
        else:
            t.add_row(r["name"], "[red]missing", r["reason"], "", "", "", "", "")
    Console(width=200).print(t)
    return 0


def cmd_doctor(args: list[str]) -> int:
    from rich.console import Console

    from . import __version__, provenance

    con = Console()
    con.print(f"[bold]harness[/] {__version__}  git {provenance.git_info()}")
    t0 = time.perf_counter()
    try:
        from . import engine

        info = engine.engine_info()
        con.print(f"[bold]engine[/] llama-cpp-python {info['llama_cpp_python']}  "
                  f"(import {1e3 * (time.perf_counter() - t0):.0f} ms)")
        con.print(f"  GPU offload support: {'[green]yes' if info['gpu_offload_supported'] else '[yellow]no (CPU build)'}")
        con.print(f"  system info: {info['system_info']}")
    except Exception as e:  # doctor reports, it does not stop at the first problem
        con.print(f"[red]engine unusable[/]: {type(e).__name__}: {e}")
    con.print("  timing path: python (the native timing library is not part of this build)")
    gpu = provenance.gpu_info()
    if gpu.get("available"):
        con.print(f"[bold]NVML[/] driver {gpu.get('driver_version')}  CUDA {gpu.get('cuda_driver_version')}")
        for g in gpu["gpus"]:
            con.print(f"  GPU {g['index']}: {g['name']}  {g.get('memory_total_mib') or 0:.0f} MiB  "
                      f"power limit {g.get('power_limit_w')} W")
    else:
        con.print(f"[bold]NVML[/] [yellow]not available[/]: {gpu.get('reason')} (telemetry: host only)")
    h = provenance.host_info()
    con.print(f"[bold]host[/] {h['cpu_model']}  {h['cpu_cores_physical']} cores / {h['cpu_cores_logical']} "
              f"threads  {h['ram_total_mib']} MiB RAM  {h['os']}  Python {h['python']}")
    name, raw = next((n, r) for n, r in _model_configs() if n == "gemma3_270m")
    m = describe_model(name, raw)
    if m["ok"]:
        con.print(f"[bold]default model[/] {m['path']}  {m['size_mib']:.1f} MiB  {m['architecture']}  "
                  f"{m['n_layers']} layers  ctx {m['n_ctx_train']}  {m['quantization']}")
    else:
        con.print(f"[bold]default model[/] [red]unavailable[/]: {m['reason']}")
    return 0
