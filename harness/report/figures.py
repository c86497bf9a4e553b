"""Report figures (matplotlib, Agg). Each function draws one PNG from data and returns its path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import registry
from ..analysis.stats import clip_interval

# matplotlib's axis arithmetic overflows near the float limit; no measurement comes close.
_PLOT_LIMIT = 1e200

PHASE_COLORS = {"load": "#8e8e93", "warmup": "#ffcc00", "prefill": "#ff9500", "decode": "#34c759",
                "idle": "#d1d1d6", "other": "#f2f2f7"}
LABELS = {"decode_tps": "decode tok/s", "ttft_ms": "TTFT (ms)", "prefill_tps": "prefill tok/s",
          "itl_p50_ms": "ITL p50 (ms)", "itl_p99_ms": "ITL p99 (ms)", "energy_per_token_j": "energy per token (J)",
          "bandwidth_efficiency": "bandwidth efficiency"}


def pyplot():
    """matplotlib.pyplot on the Agg backend, with matplotlib's INFO lines kept quiet."""
    import logging

    import matplotlib

    # matplotlib announces its font cache at INFO ("generated new fontManager"); inside a sweep,
    # Hydra's job logging would print that line among the progress lines.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def _mean_ci(values: np.ndarray, metric: str) -> tuple[float, float, float]:
    """(mean, error below, error above) for a 95% CI bar: the t-interval, clipped at zero for a
    quantity that cannot be negative (as in the report's tables); no bar for n < 2 or a mean that
    is not finite."""
    from scipy import special

    v = values[np.isfinite(values)]
    scale = float(np.abs(v).max()) if v.size else 0.0
    if scale == 0.0:
        return (0.0 if v.size else math.nan), 0.0, 0.0
    u = v / scale  # within [-1, 1]: the sum and the squares cannot overflow on extreme data
    mean = float(u.mean()) * scale
    if v.size < 2:
        return mean, 0.0, 0.0
    half = float(special.stdtrit(v.size - 1, 0.975)) * float(u.std(ddof=1)) / math.sqrt(v.size) * scale
    if not (math.isfinite(mean) and math.isfinite(half)):
        return mean, 0.0, 0.0
    lo, _ = clip_interval(metric, mean - half, mean + half)
    return mean, mean - float(lo), half


def plottable(ok, metric: str):
    """The rows of `ok` whose `metric` can be drawn: finite, within the metric's plausibility bound
    (registry) and far from the float limit. Others are left out of the figure."""
    m = registry.BY_NAME.get(metric)
    bound = min(_PLOT_LIMIT, m.max_plausible) if m is not None and m.max_plausible is not None else _PLOT_LIMIT
    v = ok[metric].astype(float)
    return ok.loc[np.isfinite(v) & (v.abs() <= bound)]


def _order(levels):
    try:
        return sorted(levels, key=lambda x: float(x))
    except (TypeError, ValueError):
        return sorted(levels, key=str)


def param_effect(ok, param: str, metrics: tuple[str, ...], path: Path) -> Path | None:
    """Mean of each metric at each level of `param` with 95% CI bars (all other parameters pooled
    within the level: the marginal mean), one panel per metric, one line per hardware group."""
    metrics = tuple(m for m in metrics if m in ok and len(plottable(ok, m)))
    data = ok[[param, "hardware", *metrics]].dropna(subset=[param])
    if not metrics or data.empty or data[param].nunique() < 2:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part_all = plottable(data, metric)
        for hw, part in part_all.groupby(part_all["hardware"].fillna("unknown hardware"), sort=True):
            levels = _order(part[param].unique())
            means, below, above = zip(*(_mean_ci(part.loc[part[param] == lv, metric].to_numpy(dtype=float), metric)
                                        for lv in levels))
            x = np.arange(len(levels))
            ax.errorbar(x, means, yerr=[below, above], marker="o", capsize=4, label=str(hw)[:60])
            ax.set_xticks(x, [str(lv) for lv in levels])
        ax.set_xlabel(param)
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(f"{LABELS.get(metric, metric)} by {param}", fontsize=10)
        ax.grid(alpha=0.3)
        if part_all["hardware"].nunique() > 1:
            ax.legend(fontsize=6)
    return _save(fig, path)


def distribution(ok, metric: str, label_cols: list[str], path: Path, max_groups: int = 24) -> Path | None:
    """Box plot of per-sample `metric` for each configuration."""
    data = plottable(ok, metric) if metric in ok else ok.iloc[0:0]
    if data.empty:
        return None
    keys = label_cols or ["run_id"]
    groups = list(data.groupby(keys, dropna=False, sort=True))[:max_groups]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(groups) + 2), 3.8))
    ax.boxplot([g[metric].to_numpy(dtype=float) for _, g in groups], showmeans=True)
    names = [",".join(str(v) for v in (k if isinstance(k, tuple) else (k,))) for k, _ in groups]
    ax.set_xticks(range(1, len(groups) + 1), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.set_title(f"{LABELS.get(metric, metric)} per configuration ({' / '.join(keys)})")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def telemetry_timeline(samples, title: str, path: Path) -> Path | None:
    """GPU utilisation, power and fan speed over time, background shaded by phase."""
    cols = [c for c in ("gpu_util_pct", "power_w", "fan_pct") if c in samples and samples[c].notna().any()]
    if not cols:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(cols), 1, figsize=(7.5, 1.9 * len(cols) + 0.6), sharex=True, squeeze=False)
    t = samples["t_ns"].to_numpy(dtype=float) / 1e9
    phases = samples["phase"].astype(str).to_numpy()
    for ax, col in zip(axes[:, 0], cols):
        start = 0
        for i in range(1, len(t) + 1):
            if i == len(t) or phases[i] != phases[start]:
                ax.axvspan(t[start], t[min(i, len(t) - 1)], color=PHASE_COLORS.get(phases[start], "#eee"), alpha=0.35, lw=0)
                start = i
        y = samples[col].to_numpy(dtype=float)
        y = np.where(np.isfinite(y) & (np.abs(np.nan_to_num(y)) <= _PLOT_LIMIT), y, np.nan)  # gaps, not overflow
        ax.plot(t, y, lw=1.2, color="#1f4e79")
        ax.set_ylabel({"gpu_util_pct": "GPU util %", "power_w": "power W", "fan_pct": "fan %"}[col])
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.35) for c in PHASE_COLORS.values()]
    axes[0, 0].legend(handles, list(PHASE_COLORS), fontsize=7, ncol=6, loc="upper right")
    axes[0, 0].set_title(title[:100])
    return _save(fig, path)


def bars(labels: list[str], values: list[float], ylabel: str, title: str, path: Path) -> Path | None:
    pairs = [(lab, v) for lab, v in zip(labels, values) if v is not None and math.isfinite(v) and abs(v) <= _PLOT_LIMIT]
    if not pairs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(pairs) + 2), 3.6))
    ax.bar(range(len(pairs)), [v for _, v in pairs], color="#1f4e79")
    ax.set_xticks(range(len(pairs)), [lab for lab, _ in pairs], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
