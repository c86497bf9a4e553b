"""`harness run -m ... report.narrative=llm`: the sweep's automatic report carries the narrative
written by the local model (the agent's default config), fact-checked, and the agent's run."""

from __future__ import annotations

import json
import re

from conftest import TINY, load_schema, run_harness


def test_sweep_report_with_llm_narrative(tmp_path):
    import jsonschema

    res = tmp_path / "res"
    p = run_harness("run", "-m", "sampling.temperature=0.2,1.0", *TINY, "report.narrative=llm",
                    f"results_dir={res}", "sweep_name=nar", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert re.search(r"figures? verified", p.stdout)
    report = res / "nar" / "report"
    md = (report / "report.md").read_text()
    assert "Narrative (written by gemma3_270m, fact-checked)" in md
    assert re.search(r" figures? verified\*\*", md)
    agent = json.loads((report / "agent" / "run.json").read_text())
    jsonschema.validate(agent, load_schema())
    assert agent["status"] == "ok" and agent["aggregates"]["decode_tps"]["mean"] > 0
    # The narrative setting does not change the job folder names (it is not a sweep parameter).
    assert sorted(d.name for d in (res / "nar").iterdir() if (d / "run.json").is_file()) == [
        "bench.repetitions=2,bench.warmup=0,sampling.temperature=0.2,workload.max_tokens=8",
        "bench.repetitions=2,bench.warmup=0,sampling.temperature=1.0,workload.max_tokens=8"]


def test_bad_narrative_mode_stops_before_loading(tmp_path):
    p = run_harness("run", "report.narrative=poem", f"results_dir={tmp_path / 'res'}", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: report.narrative")
    assert not (tmp_path / "res").exists()
