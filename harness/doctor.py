"""`harness models` and `harness doctor`: what is configured and what this machine can do."""

from __future__ import annotations

import time
from pathlib import Path

from .report.console import console


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
    from rich.table import Table

    rows = [describe_model(n, raw) for n, raw in _model_configs()]
    t = Table(title="configured models (conf/model/)", title_justify="left")
    for c in ("model", "status", "file", "size MiB", "arch", "layers", "trained ctx", "quant"):
        t.add_column(c, overflow="fold" if c == "file" else "ellipsis")  # a long path wraps within the width
    for r in rows:
        if r["ok"]:
            t.add_row(r["name"], "[green]ok", r["path"], f"{r['size_mib']:.1f}", r["architecture"],
                      str(r["n_layers"]), str(r["n_ctx_train"]), str(r["quantization"]))
        else:
            t.add_row(r["name"], "[red]missing", r["reason"], "", "", "", "", "")
    console().print(t)
    return 0


def git_text(info: dict) -> str:
    """provenance.git_info() for people: "git 0123456789ab (local changes)", "not a git checkout"."""
    sha = info.get("sha")
    if not sha:
        return "not a git checkout"
    return f"git {sha[:12]}" + (" (local changes)" if info.get("dirty") else "")


def cmd_doctor(args: list[str]) -> int:
    from . import __version__, provenance

    con = console()
    con.print(f"[bold]harness[/] {__version__}  {git_text(provenance.git_info())}")
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
    _native_report(con)
    _telemetry_report(con)
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


def _native_report(con) -> None:
    """Which timing path bench.timing=auto takes here, and why not native."""
    from rich.markup import escape

    try:
        from .engine import native

        st = native.status()
    except Exception as e:  # doctor reports, it does not stop at the first problem
        con.print(f"  timing path: [yellow]python[/] (native library check failed: {escape(f'{type(e).__name__}: {e}')})")
        return
    if st.usable:
        con.print(f"  timing path: [green]native[/] {escape(st.path)} ({escape(st.reason)})")
    else:
        con.print(f"  timing path: [yellow]python[/] (native library unusable: {escape(st.reason)})")


def telemetry_preview() -> dict:
    """What telemetry would record here with the default settings: one real reading of the
    selected GPU (or why there is none) and of the host."""
    import os

    from .config import TelemetryConfig
    from .telemetry.session import close, open_sampler

    sampler, info = open_sampler(TelemetryConfig())
    try:
        sampler.sample("tick")
        sample = sampler.samples[-1]
    finally:
        close(sampler, info)
    gpu_fields = {k: sample.get(k) for k in ("gpu_util_pct", "mem_util_pct", "vram_used_mib", "fan_pct", "temp_c",
                                             "power_w", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "pstate")}
    return {"info": info, "status": sampler.status, "gpu": gpu_fields if info.get("gpu") else None,
            "unsupported": (sampler.gpu.unsupported if sampler.gpu else {}) | (sampler.host.unsupported if sampler.host else {}),
            "power_source": sampler.gpu.power_source if sampler.gpu else None,
            "host": {k: sample.get(k) for k in ("proc_cpu_pct", "sys_cpu_pct", "proc_rss_mib", "sys_mem_used_mib",
                                                "cpu_freq_mhz", "cpu_temp_c")},
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _telemetry_report(con) -> None:
    from . import provenance

    gpus = provenance.gpu_info()
    if gpus.get("available"):
        con.print(f"[bold]NVML[/] driver {gpus.get('driver_version')}  CUDA {gpus.get('cuda_driver_version')}")
        for g in gpus["gpus"]:
            bw = g.get("peak_mem_bandwidth_gbps")
            con.print(f"  GPU {g['index']}: {g['name']}  {g.get('memory_total_mib') or 0:.0f} MiB  "
                      f"power limit {g.get('power_limit_w')} W  bus {g.get('memory_bus_width_bits')} bit  "
                      f"peak bandwidth {f'{bw:.0f} GB/s' if bw else 'unknown'}  {g['uuid']}")
    else:
        con.print(f"[bold]NVML[/] [yellow]not available[/]: {gpus.get('reason')}")
    p = telemetry_preview()
    if p["gpu"] is not None:
        g = p["info"]["gpu"]
        con.print(f"[bold]telemetry[/] samples GPU {g['index']} ({g['name']}) every {p['info']['interval_ms']} ms"
                  f" (CUDA_VISIBLE_DEVICES={p['cuda_visible_devices']}); power reading: {p['power_source']}")
        con.print("  now: " + "  ".join(f"{k}={v}" for k, v in p["gpu"].items()))
    else:
        con.print(f"[bold]telemetry[/] host only: {p['info']['reason']}")
    con.print("  host now: " + "  ".join(f"{k}={v if v is None else round(v, 1)}" for k, v in p["host"].items()))
    for metric, why in sorted(p["unsupported"].items()):
        con.print(f"  [yellow]{metric}[/]: null in records ({why})")
