"""What the effect comparisons say, in words: the Holm-adjusted significance decision and the
note of each comparison, and the one-line verdict per (group, parameter, metric).

The numbers come from `effects.effects`; this module only decides and words them.
"""

from __future__ import annotations

import math

from .significance import holm


def finish(comps: list[dict], alpha: float, min_effect: float) -> None:
    """Holm-adjust the p-values of every comparison of one call, in place, and set `p_holm`,
    `significant` and `note`. Each comparison carries `why` (the test's reason, or "") and
    `load_param` (the parameter reloads the model at every level); both are consumed here."""
    adj = holm([c["p_value"] for c in comps])
    for c, ph in zip(comps, adj):
        c["p_holm"] = float(ph)
        notes = []
        if c["same_effective"]:
            notes.append("same effective configuration")
        if c["load_effect"]:
            notes.append("coincides with a model reload")
        if c.pop("load_param", False):
            notes.append("each level is a separate load")
        if c["confounded"]:
            notes.append("levels share no combination of the other parameters: may be confounded")
        why = c.pop("why", "")
        if why:
            notes.append(why)
        if c.get("blocked"):
            notes.append("blocked by round")
        below = math.isfinite(c["rel_diff"]) and abs(c["rel_diff"]) < min_effect
        drift = c.get("drift")
        within_drift = (drift is not None and math.isfinite(c["rel_diff"]) and not below
                        and abs(c["rel_diff"]) <= drift)
        if ph < alpha and below and not c["same_effective"]:
            notes.append(f"below the minimum effect size ({min_effect:.0%})")
        if ph < alpha and within_drift and not c["same_effective"]:
            notes.append(f"no larger than the drift this sweep measured ({drift:.1%})")
        below = below or within_drift
        c["significant"] = bool(ph < alpha) and not below and not c["same_effective"] \
            and math.isfinite(c["rel_diff"])
        notes.append("significant" if c["significant"] else "not significant")
        c["note"] = "; ".join(notes)


def effect_summary(comparisons: list[dict]) -> list[dict]:
    """One dict per (group, param, metric), in first-seen order:
      group, param, metric, n_comparisons, n_significant, any_significant,
      largest_rel_diff (signed rel_diff of largest magnitude among comparisons of different
        effective configurations; NaN when none), largest_between ((level_a, level_b) of it),
      load_effect (any comparison flagged), confounded (any comparison flagged),
      same_effective_only (every comparison was between equal effective configurations),
      verdict: "no measurable effect" | "measurable effect" | "effect coincides with a model
        reload" (every significant comparison is load-flagged) | "same effective configuration".
    Per group (hardware, model, engine) rather than pooled: an effect on one machine is not one on
    another.
    """
    out: dict[tuple, dict] = {}
    clean: dict[tuple, bool] = {}
    for c in comparisons:
        key = (c["group"], c["param"], c["metric"])
        s = out.setdefault(key, {"group": c["group"], "param": c["param"], "metric": c["metric"],
                                 "n_comparisons": 0, "n_significant": 0, "any_significant": False,
                                 "largest_rel_diff": math.nan, "largest_between": None,
                                 "load_effect": False, "confounded": False, "same_effective_only": True})
        s["n_comparisons"] += 1
        s["load_effect"] |= bool(c["load_effect"])
        s["confounded"] |= bool(c.get("confounded"))
        if c["significant"]:
            s["n_significant"] += 1
            s["any_significant"] = True
            clean[key] = clean.get(key, False) or not c["load_effect"]
        if not c["same_effective"]:
            s["same_effective_only"] = False
            r = c["rel_diff"]
            if math.isfinite(r) and not (abs(r) <= abs(s["largest_rel_diff"])):
                s["largest_rel_diff"], s["largest_between"] = r, (c["level_a"], c["level_b"])
    result = []
    for key, s in out.items():
        if s["same_effective_only"]:
            s["verdict"] = "same effective configuration"
        elif not s["any_significant"]:
            s["verdict"] = "no measurable effect"
        else:
            s["verdict"] = "measurable effect" if clean.get(key) else "effect coincides with a model reload"
        result.append(s)
    return result
