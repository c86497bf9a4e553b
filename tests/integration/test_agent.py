"""The report's narrative end to end, with the real default model and tiny budgets: `harness agent`
and `harness report ... report.narrative=llm` write the fact-checked section, the agent's
generation is recorded as a run, and bad overrides stop before anything loads."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser

import pytest
from conftest import TINY, copy_sweep, load_schema, run_harness

pytestmark = pytest.mark.slow

TITLE = "Narrative (written by gemma3_270m, fact-checked)"
WORKFLOW = ("Throughput", "TTFT", "Total Duration", "Tokens Generated", "Prompt Eval", "Eval Duration",
            "Load Duration")


@pytest.fixture(scope="module")
def sweep(tiny_sweep, tmp_path_factory):
    """A copy of the session's real 2x2 sweep without its report: the agent writes one here."""
    return copy_sweep(tiny_sweep.dir, tmp_path_factory.mktemp("agent"))


@pytest.fixture(scope="module")
def agent_report(sweep):
    """`harness agent` with a 16-token budget; ignore_eos so that decode is always measured."""
    r = run_harness("agent", str(sweep), "agent.max_tokens=16", "bench.ignore_eos=true", cwd=sweep.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return sweep / "report", r


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.h2, self.marks, self._in = [], 0, None

    def handle_starttag(self, tag, attrs):
        self._in = tag
        if tag == "mark" and ("class", "unverified") in attrs:
            self.marks += 1

    def handle_data(self, data):
        if self._in == "h2":
            self.h2.append(data)


def test_agent_writes_the_narrative_section_with_its_verification_header(agent_report):
    out, r = agent_report
    md = (out / "report.md").read_text()
    assert f"## 2. {TITLE}" in md  # right after the executive summary
    header = re.search(r"^\*\*(\d+) of (\d+) (figures?) verified\*\*$", md, re.M)
    assert header, md[:3000]
    check = json.loads((out / "agent" / "factcheck.json").read_text())
    assert (int(header[1]), int(header[2])) == (check["verified"], check["figures"])
    assert len(check["unverified"]) == check["figures"] - check["verified"]
    assert md.count("[unverified]") >= len(check["unverified"])
    # The generated text is in the section, quoted, starting with the configured answer prefix.
    text = (out / "agent" / "narrative.md").read_text().strip()
    assert text.startswith("## 1. Executive summary")
    assert "> #### 1. Executive summary" in md  # its headings stay inside the section
    # The headline figures still come from the analysis.
    assert re.search(r"^\*\*Best decode tok/s: [\d.,]+ ", md, re.M)
    page = (out / "report.html").read_text()
    p = _Text()
    p.feed(page)
    assert f"2. {TITLE}" in p.h2 and '<div class="narrative"><h4>1. Executive summary</h4>' in page
    assert len([h for h in p.h2 if h.strip()]) == len(re.findall(r"^## \d+\. ", md, re.M))
    assert f"<strong>{header[1]} of {header[2]} {header[3]} verified</strong>" in page
    assert p.marks == len(check["unverified"])
    assert f"narrative: {header[1]} of {header[2]} {header[3]} verified" in r.stdout


def test_agent_run_is_a_recorded_benchmark_run(agent_report, sweep):
    import jsonschema

    out, _ = agent_report
    rec = json.loads((out / "agent" / "run.json").read_text())
    jsonschema.validate(rec, load_schema())
    assert rec["status"] == "ok" and rec["job_name"] == "agent"
    assert rec["config"]["workload"]["name"] == "insight_agent"
    prompt = rec["config"]["workload"]["prompt"]
    assert "| # |" in prompt and "{facts}" not in prompt  # the computed facts, not a placeholder
    assert str(sweep) not in prompt and "run.json" not in prompt  # facts, not file names
    agg = rec["aggregates"]
    assert agg["ttft_ms"]["mean"] > 0 and agg["decode_tps"]["mean"] > 0
    assert rec["repetitions"][0]["n_gen_tokens"] == 16
    assert rec["load"]["load_ms"] > 0
    # held like a sweep point's devices: the CPU, not shared
    assert rec["provenance"]["device_lock"] == {"devices": ["cpu"], "held": ["cpu"], "shared_with": {},
                                                "supported": True}
    assert {w["name"] for w in rec["telemetry"]["windows"]} >= {"load", "prefill", "decode"}
    tokens = (out / "agent" / "tokens.csv").read_text().splitlines()
    assert tokens[0] == "rep,index,t_ns,token_id" and len(tokens) == 1 + 16
    md = (out / "report.md").read_text()
    for label in WORKFLOW:
        assert re.search(rf"^\| narrative \(gemma3_270m\): {label} \| [\d.,]+", md, re.M), label
    assert "| ingest |" in md and "| analysis |" in md
    # The agent's run is not ingested as a sample of the sweep it describes.
    again = run_harness("report", str(sweep), "--out", str(sweep / "plain"), cwd=sweep.parent)
    assert again.returncode == 0, again.stderr[-2000:]
    plain = (sweep / "plain" / "report.md").read_text()
    assert "4 configurations, 12 samples" in plain and "Narrative" not in plain


def test_report_with_narrative_llm_and_sampling_overrides(sweep):
    out = sweep / "llm"
    r = run_harness("report", str(sweep), "--out", str(out), "report.narrative=llm", "agent.max_tokens=8",
                    "sampling.temperature=0.0", cwd=sweep.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert f"## 2. {TITLE}" in md and re.search(r"^\*\*\d+ of \d+ figures? verified\*\*$", md, re.M)
    rec = json.loads((out / "agent" / "run.json").read_text())
    assert rec["config"]["sampling"]["temperature"] == 0.0
    assert rec["config"]["bench"]["ignore_eos"] is False  # the agent stops at the end of its text
    assert 1 <= rec["repetitions"][0]["n_gen_tokens"] <= 8


def test_agent_refuses_a_device_another_harness_job_holds(sweep, tmp_path, monkeypatch):
    import shutil

    from harness import devicelock

    # the sweep's own points only (the other tests write reports and agent runs into its folder)
    sweep = shutil.copytree(sweep, tmp_path / "s", ignore=lambda d, names: [
        n for n in names if d == str(sweep) and not (n.startswith("bench.") or n == "sweep.json")])

    # the scope run_harness gives its children, so that this test process is "another job" to them
    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")
    devicelock.hold(["cpu"])
    try:
        r = run_harness("agent", str(sweep), "--out", str(tmp_path / "out"), "agent.max_tokens=8", cwd=tmp_path)
    finally:
        devicelock.release_all()
    assert r.returncode == 1, (r.stdout, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert f"narrative: not written: DeviceBusy: device cpu is in use by another harness job (pid {os.getpid()})" \
        in r.stderr
    rec = json.loads((tmp_path / "out" / "agent" / "run.json").read_text())
    assert rec["status"] == "failed" and not rec["load"] and not rec["repetitions"]  # nothing loaded
    assert (rec["error"]["type"], rec["error"]["phase"]) == ("DeviceBusy", "load")
    assert "bench.allow_shared_device=true" in rec["error"]["message"]
    assert "No narrative: the agent's run failed (DeviceBusy" in (tmp_path / "out" / "report.md").read_text()
    # allowed to share: it runs, and says with whom
    devicelock.hold(["cpu"])
    try:
        r = run_harness("agent", str(sweep), "--out", str(tmp_path / "shared"), "agent.max_tokens=8",
                        "bench.allow_shared_device=true", cwd=tmp_path)
    finally:
        devicelock.release_all()
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "shared" / "agent" / "run.json").read_text())
    assert rec["provenance"]["device_lock"]["shared_with"] == {"cpu": os.getpid()}
    assert any("shared with another harness job" in w for w in rec["warnings"])


@pytest.mark.parametrize("args, key", [
    (["agent", "agent.max_tokens=-1"], "agent.max_tokens"),
    (["agent", "sampling.temperature=x"], "sampling.temperature"),
    (["agent", "agent.nonsense=1"], "agent.nonsense"),
    (["report", "report.narrative=llm", "runtime.n_ctx=0"], "runtime.n_ctx"),
    (["report", "report.narrative=poem"], "report.narrative"),
    (["agent", "model=nope"], "gemma3_270m"),  # names what is available
    (["agent", "runtime.n_ctx=512"], "agent.max_tokens"),  # 600 tokens to write leave no room for the facts
])
def test_bad_override_is_one_line_and_exit_2_before_loading(sweep, tmp_path, args, key):
    cmd, *rest = args
    r = run_harness(cmd, str(sweep), "--out", str(tmp_path / "out"), *rest, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], r.stderr
    assert not (tmp_path / "out").exists()  # nothing analysed, written or loaded
