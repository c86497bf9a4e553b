"""`harness calibrate [overrides]`: this machine's noise floor, from a short A/A measurement.

Two sides with the same configuration (the default model and workload unless overridden) are
measured on one engine worker, their repetitions alternating (A B A B ...), after a warm-up until
steady. Per metric it computes the coefficient of variation (pooled over both sides), the A/A
ratio B/A with its Fieller 95% interval (it should contain 1: a calibration whose A/A ratio does not
says the machine drifted while it measured), the minimum detectable effect at the sweep's default
repetitions and the repetitions a 2% difference needs. The result is stored in the harness cache
(analysis.noise.calibration_path) with the host, engine and model it was measured on; reports
cite it next to each sweep's own noise figures.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone

DEFAULTS = ["bench.repetitions=10", "workload.max_tokens=32", "bench.allow_shared_device=true"]
METRICS = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms")


def cmd_calibrate(args: list[str]) -> int:
    from . import store
    from .analysis import noise
    from .config import ConfigError
    from .engine.backend import error_type
    from .experiments.ratios import ratio_rows
    from .hydra_conf import check_run_args, compose
    from .measure import Point, backend_for, env_isolated, new_record
    from .runner import preflight

    if args and args[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: harness calibrate [overrides]   (default: "
              + " ".join(DEFAULTS) + ")")
        return 0
    overrides = DEFAULTS + list(args)
    try:
        check_run_args(overrides)
        cfg = compose(overrides)
        rc, plan = preflight(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = rc.bench.repetitions
    backend = backend_for(rc, isolated=env_isolated())
    sides = {}
    try:
        for side in ("A", "B"):
            p = Point(rc, plan, backend, new_record(rc, plan, job_name=f"calibrate-{side}", config=cfg))
            p.start()
            sides[side] = p
        sides["A"].warm_up("auto" if rc.bench.warmup == "auto" else rc.bench.warmup)
        for r in range(n):
            for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                sides[side].repetition(r)
            print(f"calibrate: {r + 1}/{n}", file=sys.stderr)
    except Exception as e:  # the run boundary: say what failed, store nothing
        print(f"error: calibration failed: {error_type(e)}: {e}", file=sys.stderr)
        return 1
    finally:
        for p in sides.values():
            p.close()
        backend.close()
        from . import devicelock

        devicelock.release_all()
    vals = {s: {m: [getattr(x.metrics, m) for x in p.repetitions] for m in METRICS} for s, p in sides.items()}
    rows = ratio_rows(vals["A"], vals["B"], list(METRICS))
    out = {}
    for m in METRICS:
        a, b = vals["A"][m], vals["B"][m]
        cvs = [_cv(x) for x in (a, b)]  # per side, pooled: a drift between the sides is not noise
        cv = math.sqrt(sum(c * c for c in cvs) / 2)
        row = rows[m]
        out[m] = {"cv": cv, "aa_ratio": row["ratio"], "aa_ratio_ci95": [row["ratio_ci95_low"], row["ratio_ci95_high"]],
                  "aa_p": row["p_value"], "mde_at_5": noise.mde(cv, 5), "reps_for_2pct": noise.reps_for(cv)}
    rec = sides["A"].record
    doc = {"schema_version": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "n": n, "overrides": overrides, "model": plan.gguf.to_dict().get("name") or rc.model.name,
           "model_sha256": rec.provenance.get("model", {}).get("sha256"),
           "host": rec.provenance.get("host"), "engine": rec.provenance.get("engine"), "timing_path": rec.timing_path,
           "metrics": out}
    path = noise.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_json(path, doc)
    print(f"{'metric':>12} {'CV':>7} {'A/A ratio [95% CI]':>26} {'MDE (n=5)':>10} {'n for 2%':>9}")
    for m, x in out.items():
        lo, hi = x["aa_ratio_ci95"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        print(f"{m:>12} {x['cv']:>7.2%} {x['aa_ratio']:>8.3f} {ci:>17} {x['mde_at_5']:>10.1%} {x['reps_for_2pct']:>9}")
    drifted = [m for m, x in out.items() if x["aa_ratio_ci95"][0] is not None
               and not (x["aa_ratio_ci95"][0] <= 1 <= x["aa_ratio_ci95"][1])]
    if drifted:
        print(f"warning: the A/A ratio of {', '.join(drifted)} excludes 1: the machine changed while it was "
              "measured; calibrate again on a quieter machine", file=sys.stderr)
    print(f"noise floor: {path}")
    return 0



def _cv(xs) -> float:
    from .metrics import summarize

    st = summarize(xs)
    return st.cv if st is not None and st.cv is not None else float("nan")
