"""SIGINT / SIGTERM during a real sweep: exit 130 / 143, the sweep marked interrupted, every
run.json left behind complete and valid, and (after SIGINT) a re-run that measures only the
missing points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import TINY, load_schema, run_records, wait_for

pytestmark = pytest.mark.slow

POINTS = ["runtime.n_ctx=256,512", "sampling.temperature=0.2,0.6,1.0"]  # 6 points



@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sweep_is_marked_and_resumes(sig, code, tmp_path, model_path, harness_cli):
    import jsonschema

    sweep = tmp_path / "s"
    args = ["run", "-m", *POINTS, *TINY, "bench.repetitions=3", "report.auto=false", f"results_dir={tmp_path}",
            "sweep_name=s"]
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HARNESS_DEVICE_LOCK_SCOPE": f"pytest-{os.getpid()}"})
    try:
        assert wait_for(lambda: len(list(sweep.glob("*/run.json"))) >= 1, 300), "no point finished"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert "interrupted" in err and "sweep_name=s" in err
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["state"] == "interrupted"
    done = run_records(sweep)
    assert 1 <= len(done) < 6
    schema = load_schema()
    for rec in done.values():
        jsonschema.validate(rec, schema)
        assert rec["status"] == "ok"
    assert not list(sweep.rglob(".tmp-*"))  # no half-written file left behind
    if sig != signal.SIGINT:
        return  # both signals leave the same folder behind; the resume is measured once, after SIGINT
    again = harness_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().splitlines()[-1] == f"{6 - len(done)} ok, 0 failed, {len(done)} skipped"
    assert len(run_records(sweep)) == 6
    assert json.loads((sweep / "sweep.json").read_text())["state"] == "complete"
