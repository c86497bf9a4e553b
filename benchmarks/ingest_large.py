"""Time and peak memory of ingesting large foreign files: a per-call CSV in the older Ollama tool's
shape (with its extra columns: timestamp, model, tag, prompt_index, prompt_text, ...) and a JSON
Lines file of Ollama /api/generate responses, at several sizes up to 200 MB, each ingested in a
fresh process (peak RSS of that process, from getrusage).

    .venv/bin/python benchmarks/ingest_large.py [--sizes-mb 25,50,100,200] [--analyze]
        [--out benchmarks/results/ingest_large.json]

Time should grow linearly with size and memory stay under 1 GB: CSV and JSON Lines are streamed,
and rows are kept as typed columns, not Python objects. --analyze also times `analyze` (ingest +
statistics + effects) on each file. Not part of `make test`: the files are written to a temporary
folder and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [" ".join(["Explain", "in", "plain", "words", "why"] + [f"topic{i}"] * (5 + i % 40)) for i in range(40)]
CHILD = r"""
import json, resource, sys, time
from harness.analysis.ingest import ingest
from harness.analysis.pipeline import analyze
path, mode = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if mode == "analyze":
    an = analyze([path], max_file_bytes=250 * 2**20)
    res, n_configs = an.ingest, len(an.configs)
else:
    res, n_configs = ingest([path], max_file_bytes=250 * 2**20), None
dt = time.perf_counter() - t0
f = res.files[0]
print(json.dumps({"seconds": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "kind": f.kind, "rows": f.n_rows, "failed": f.n_failed, "reason": f.reason,
                  "configurations": n_configs}))
"""


def write_csv(path: Path, size: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    header = ("timestamp,model,tag,num_gpu,num_ctx,temperature,config_name,prompt_index,prompt_text,ttft_s,tokens_s,"
              "load_s,prompt_eval_s,eval_s,eval_count,prompt_eval_count,total_tokens,response_chars,error\n")
    n = 0
    with open(path, "w") as f:
        f.write(header)
        written = len(header)
        while written < size:
            ngl = rng.choice((8, 16, 40, 999))
            ctx = rng.choice((2048, 4096))
            temp = rng.choice((0.2, 0.7))
            pi = rng.randrange(len(PROMPTS))
            err = "model runner has unexpectedly stopped" if rng.random() < 0.01 else ""
            line = (f"2025-03-01T10:{n // 3600 % 60:02d}:{n % 60:02d},gemma3,270m,{ngl},{ctx},{temp},gpu_{ngl}_{ctx},"
                    f"{pi},\"{PROMPTS[pi]}\",{rng.uniform(0.1, 0.9):.4f},{rng.uniform(10, 60):.3f},"
                    f"{rng.uniform(0, 2):.3f},{rng.uniform(0.02, 0.4):.4f},{rng.uniform(1, 8):.3f},"
                    f"{rng.randint(40, 200)},{rng.randint(10, 60)},{rng.randint(60, 260)},{rng.randint(100, 900)},"
                    f"{err}\n")
            f.write(line)
            written += len(line)
            n += 1
    return n


def write_jsonl(path: Path, size: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    n = written = 0
    with open(path, "w") as f:
        while written < size:
            ev = rng.randint(40, 200)
            o = {"model": rng.choice(("gemma3:270m", "gemma3:1b")), "created_at": f"2025-03-01T10:00:{n % 60:02d}Z",
                 "response": "The sky is blue because of Rayleigh scattering.", "done": True,
                 "total_duration": rng.randint(10**9, 9 * 10**9), "load_duration": rng.randint(10**6, 10**9),
                 "prompt_eval_count": rng.randint(10, 60), "prompt_eval_duration": rng.randint(10**7, 4 * 10**8),
                 "eval_count": ev, "eval_duration": int(ev / rng.uniform(10, 60) * 1e9)}
            line = json.dumps(o) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n


def measure(path: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", default="25,50,100,200")
    p.add_argument("--analyze", action="store_true", help="also time analyze() on each file")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest_large.json")
    a = p.parse_args(argv)
    sizes = [int(float(s) * 1e6) for s in a.sizes_mb.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="ingest-large-") as tmp:
        for fmt, writer, ext in (("csv", write_csv, "csv"), ("jsonl", write_jsonl, "jsonl")):
            for size in sizes:
                path = Path(tmp) / f"calls_{size // 10**6}mb.{ext}"
                t0 = time.perf_counter()
                lines = writer(path, size)
                gen_s = time.perf_counter() - t0
                for mode in ("ingest", "analyze") if a.analyze else ("ingest",):
                    got = measure(path, mode)
                    row = {"format": fmt, "mode": mode, "size_mb": round(path.stat().st_size / 1e6, 1),
                           "lines": lines, "write_s": round(gen_s, 2), **got}
                    if "seconds" in got:
                        row["s_per_100mb"] = round(got["seconds"] / (path.stat().st_size / 1e8), 3)
                    results.append(row)
                    print(json.dumps(row), flush=True)
                path.unlink()
    doc = {"what": __doc__.split("\n\n")[0], "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "limit_mib": 1024, "results": results,
           "peak_rss_mib_max": max((r.get("peak_rss_mib", 0) for r in results), default=None)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
