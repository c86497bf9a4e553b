"""Do a sweep's findings depend on the order it ran in? The quick sweep (`make run`) forward and
with both axes reversed, N pairs, each analysed as `harness report` does; a pair agrees when both
name the same set of significant effects (parameter, metric).

    .venv/bin/python benchmarks/order_agreement.py --pairs 10 [--out benchmarks/results/order_agreement.json]

Prints one line per sweep (wall time, significant effects, the control drift of decode) and the
agreement count; writes the same as JSON. Pair i uses bench.order_seed=i on both sides, so the
rounds' shuffles differ between pairs and the two sides start from reversed declarations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORWARD = ["runtime.n_ctx=512,2048", "sampling.temperature=0.0,0.7,1.2"]
REVERSE = ["runtime.n_ctx=2048,512", "sampling.temperature=1.2,0.7,0.0"]


def sweep(args: list[str], results: Path, name: str, seed: int) -> dict:
    env = {**os.environ, "HARNESS_DEVICE_LOCK_SCOPE": f"order-{os.getpid()}"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "harness", "run", "-m", "+sweep=quick", *args, "report.auto=false",
                        f"bench.order_seed={seed}", f"results_dir={results}", f"sweep_name={name}"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"name": name, "wall_s": wall, "error": r.stderr[-1000:]}
    from harness.analysis.pipeline import analyze

    an = analyze([results / name])
    sig = sorted({(c["param"], c["metric"]) for c in an.effects if c["significant"]})
    drift = [d["metrics"].get("decode_tps", {}).get("rel") for d in an.noise.get("drift", [])]
    return {"name": name, "wall_s": wall, "significant": sig, "decode_drift": drift[0] if drift else None,
            "mde_decode": (an.noise.get("noise", {}).get("decode_tps") or {}).get("mde")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "order_agreement.json"))
    a = ap.parse_args()
    load_before = os.getloadavg()
    rows, agree = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.pairs):
            sides = [("forward", FORWARD), ("reverse", REVERSE)]
            if i % 2:
                sides.reverse()  # which side runs first alternates too
            pair = {}
            for label, args in sides:
                pair[label] = sweep(args, Path(tmp), f"{label}-{i}", i)
                res = pair[label]
                print(f"pair {i} {label:>7}: {res['wall_s']:.0f} s, significant {res.get('significant')}, "
                      f"decode drift {res.get('decode_drift')}", flush=True)
            same = ("error" not in pair["forward"] and "error" not in pair["reverse"]
                    and pair["forward"]["significant"] == pair["reverse"]["significant"])
            agree += same
            rows.append({"pair": i, "agree": same, **pair})
    doc = {"pairs": a.pairs, "agree": agree, "load_before": load_before, "load_after": os.getloadavg(),
           "mean_wall_s": sum(s["wall_s"] for r in rows for s in (r["forward"], r["reverse"])) / (2 * len(rows)),
           "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1, default=list) + "\n")
    print(f"{agree} of {a.pairs} pairs name the same significant effects; mean sweep {doc['mean_wall_s']:.0f} s; "
          f"load {load_before[0]:.1f} -> {doc['load_after'][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
