"""Two variants measured side by side: the ratio B/A of each metric into a benchmark's extra_info."""

from __future__ import annotations

from typing import Mapping, Sequence


def ratios_into(info: dict, side: Mapping[str, Mapping[str, Sequence]], a: str, b: str,
                metrics: Sequence[tuple[str, str]]) -> list[tuple[str, dict, list, str]]:
    """For each (name, metric) of `metrics` with data on both sides: the ratio of means B/A with its
    Fieller 95% interval (harness.experiments.ratios.ratio_rows, as `harness compare`), stored in
    `info` as NAME_ratio, NAME_ratio_ci95, NAME_<a>_mean, NAME_<b>_mean and NAME_<variant> (the
    per-round values of every variant of `side`). Returns (name, row, ci, ci_text) per metric."""
    from harness.experiments.ratios import ratio_rows

    rows = ratio_rows(side[a], side[b], [metric for _, metric in metrics])
    out = []
    for name, metric in metrics:
        row = rows.get(metric)
        if row is None:
            continue
        ci = [row["ratio_ci95_low"], row["ratio_ci95_high"]]
        info[f"{name}_ratio"] = row["ratio"]
        info[f"{name}_ratio_ci95"] = ci
        info[f"{name}_{a}_mean"], info[f"{name}_{b}_mean"] = row["mean_a"], row["mean_b"]
        for k in side:
            info[f"{name}_{k}"] = side[k][metric]
        out.append((name, row, ci, "[?]" if None in ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"))
    return out
