"""The native timing path (native/harness_native.c through harness/engine/native.py), on the real default
model: it builds against the installed llama.cpp, decodes greedily to the same tokens as the Python
path, times every token, is refused when built against something else, and the harness falls back
to the Python path (auto) or stops with one line (bench.timing=native) when it is missing."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, TINY, load_schema
from jsonschema import Draft202012Validator

from harness import engine
from harness.engine import native
from harness.config import SamplingConfig, validate
from harness.hydra_conf import compose
from harness.plan import make_plan
from harness.workload import build_prompt

pytestmark = pytest.mark.slow

NATIVE_SRC = ROOT / "native"
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=0)


def _build(build_dir: Path, *defines: str) -> Path:
    """cmake configure + build of native/ into build_dir against the venv's site-packages."""
    missing = [t for t in ("cmake",) if shutil.which(t) is None]
    if not (shutil.which("cc") or shutil.which("gcc")):
        missing.append("a C compiler (cc/gcc)")
    if missing:
        pytest.skip(f"cannot build the native library here: {', '.join(missing)} not installed")
    site = sysconfig.get_paths()["purelib"]
    for cmd in (["cmake", "-S", str(NATIVE_SRC), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={site}", *defines],
                ["cmake", "--build", str(build_dir)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    lib = build_dir / native.LIB_NAME
    assert lib.is_file()
    return lib


@pytest.fixture(scope="module")
def lib_path(tmp_path_factory) -> Path:
    """A fresh build (not native/build, which `make native` owns) used by every test here."""
    return _build(tmp_path_factory.mktemp("native") / "build")


@pytest.fixture
def use_lib(lib_path, monkeypatch) -> Path:
    monkeypatch.setenv(native.ENV_VAR, str(lib_path))
    return lib_path


@pytest.fixture(scope="module")
def loaded(model_path):
    rc = validate(compose(["runtime.n_ctx=512"]))
    plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
    eng = engine.Engine()
    lm, _ = eng.load(plan)
    yield rc, lm
    eng.unload()


def _both(lm, prompt, sampling, *, seed=1, max_tokens=32, ignore_eos=True):
    kw = dict(text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=sampling, seed=seed,
              max_tokens=max_tokens, ignore_eos=ignore_eos)
    return engine.generate(lm, **kw), native.generate(lm, **kw)


# --- the library and its checks --------------------------------------------------------------------

def test_built_library_is_usable_and_names_what_it_was_built_against(use_lib):
    st = native.status()
    assert st.usable, st.reason
    assert st.path == str(use_lib)
    lib = native.open_library(use_lib)
    assert lib.harness_native_abi_version() == native.ABI_VERSION
    built = lib.harness_native_llama_build().decode()
    assert built == native.sha256_of(native.installed_llama_h()) and len(built) == 64


def test_library_links_to_the_llama_cpp_of_llama_cpp_python(use_lib):
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) not installed")
    out = subprocess.run(["readelf", "-d", str(use_lib)], capture_output=True, text=True, check=True).stdout
    lib_dir = Path(sysconfig.get_paths()["purelib"]) / "llama_cpp" / "lib"
    assert "libllama.so" in out and f"[{lib_dir}]" in out  # RUNPATH: exactly llama-cpp-python's lib dir


@pytest.mark.parametrize("define,words", [
    ("-DHARNESS_NATIVE_ABI=999", ["ABI version mismatch", "999", f"needs {native.ABI_VERSION}"]),
    ("-DHARNESS_LLAMA_H_SHA_OVERRIDE=" + "0" * 64, ["llama.h mismatch", "0" * 16]),
], ids=["abi", "llama_h"])
def test_mismatched_library_is_refused(define, words, tmp_path, monkeypatch, loaded):
    bad = _build(tmp_path / "build", define)
    monkeypatch.setenv(native.ENV_VAR, str(bad))
    st = native.status()
    assert not st.usable and st.path == str(bad)
    for w in words:
        assert w in st.reason, st.reason
    rc, lm = loaded
    with pytest.raises(native.NativeUnavailable, match="mismatch"):
        native.generate(lm, text="hi", tokens=None, add_bos=True, sampling=GREEDY, seed=1, max_tokens=2,
                        ignore_eos=True)


def test_missing_library_is_not_usable_and_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(native.ENV_VAR, str(tmp_path / "nope.so"))
    st = native.status()
    assert not st.usable and "not found" in st.reason and str(tmp_path / "nope.so") in st.reason


# --- the timed loop on the real model ----------------------------------------------------------------

def test_greedy_decoding_gives_the_same_tokens_on_both_paths(use_lib, loaded):
    rc, lm = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    py, nat = _both(lm, prompt, GREEDY)
    assert len(py.token_ids) == len(nat.token_ids) == 32
    assert nat.token_ids == py.token_ids
    assert nat.timing_path == "native" and py.timing_path == "python"


def test_seeded_sampling_with_penalties_gives_the_same_tokens_on_both_paths(use_lib, loaded):
    """The whole sampler chain (logit bias, penalties, top-k/p, min-p, temperature, dist) is the same."""
    rc, lm = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    hot = SamplingConfig(temperature=1.2, top_p=0.95, top_k=40, min_p=0.02, repeat_penalty=1.15, seed=0)
    py, nat = _both(lm, prompt, hot, seed=11, max_tokens=24)
    assert nat.token_ids == py.token_ids
    _, other = _both(lm, prompt, hot, seed=12, max_tokens=24)
    assert other.token_ids != nat.token_ids  # the seed reaches the native sampler


def test_native_timestamps_and_counters(use_lib, loaded):
    rc, lm = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    raw = native.generate(lm, text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=GREEDY,
                          seed=1, max_tokens=16, ignore_eos=True)
    n = len(raw.token_ids)
    assert raw.t_request_ns < raw.t_prefill_end_ns <= raw.token_ns[0]
    assert all(a < b for a, b in zip(raw.token_ns, raw.token_ns[1:]))
    assert len(raw.decode_ns) == len(raw.sample_ns) == len(raw.token_ns) == n
    assert all(x > 0 for x in raw.decode_ns) and all(x > 0 for x in raw.sample_ns)
    # Each decode step and each sampling lies between two token timestamps.
    for i in range(1, n):
        assert raw.decode_ns[i] + raw.sample_ns[i] <= raw.token_ns[i] - raw.token_ns[i - 1]
    assert raw.decode_ns[0] <= raw.t_prefill_end_ns - raw.t_request_ns
    # The cache was cleared: llama.cpp evaluated the whole prompt, then one step per further token.
    assert raw.engine_n_prompt_eval == raw.n_prompt_tokens == prompt.n_tokens
    assert raw.engine_n_eval == n - 1 and raw.engine_prompt_eval_ms > 0


def test_native_stops_at_end_of_generation_without_ignore_eos(use_lib, loaded):
    rc, lm = loaded
    prompt = build_prompt(rc.workload, lm, seed=0)
    py, nat = _both(lm, prompt, GREEDY, max_tokens=48, ignore_eos=False)
    assert nat.token_ids == py.token_ids
    if len(nat.token_ids) < 48:  # the model ended its turn: the last token is an end-of-generation one
        assert nat.token_ids[-1] in lm.eog_tokens


def test_native_refuses_a_prompt_that_does_not_fit(use_lib, loaded):
    rc, lm = loaded
    with pytest.raises(engine.PromptTooLong):
        native.generate(lm, text=None, tokens=list(range(1000, 1500)), add_bos=False, sampling=GREEDY, seed=1,
                        max_tokens=64, ignore_eos=True)


# --- through the CLI ---------------------------------------------------------------------------------

def _run(harness_cli, tmp_path, *args, env):
    return harness_cli("run", *TINY, *args, f"results_dir={tmp_path}", "sweep_name=n", cwd=tmp_path, env=env)


def test_end_to_end_native_run_writes_a_valid_record(lib_path, tmp_path, harness_cli):
    r = _run(harness_cli, tmp_path, "bench.timing=native", env={native.ENV_VAR: str(lib_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = list((tmp_path / "n").glob("*/run.json"))
    d = json.loads(path.read_text())
    errors = [e.message for e in Draft202012Validator(load_schema()).iter_errors(d)]
    assert errors == []
    assert d["status"] == "ok" and d["timing_path"] == d["provenance"]["timing_path"] == "native"
    assert d["provenance"]["native"]["usable"] is True and d["provenance"]["native"]["path"] == str(lib_path)
    reps = d["repetitions"]
    assert len(reps) == 2
    rows = list(csv.DictReader((path.parent / "tokens.csv").open()))
    for rep in reps:
        assert rep["n_gen_tokens"] == rep["eval_count"] == 8 and rep["engine_n_eval"] == 7
        assert rep["n_prompt_tokens"] == d["prompt"]["n_tokens"]
        assert len(rep["itl_ms"]) == 7 and len([x for x in rows if int(x["rep"]) == rep["rep"]]) == 8
        assert rep["decode_engine_ms"] > 0 and rep["sampling_ms"] > 0
        assert rep["decode_engine_tps"] == pytest.approx(7 / (rep["decode_engine_ms"] / 1e3))
        # the engine share cannot exceed the wall time of the decode phase
        assert rep["decode_engine_ms"] <= rep["decode_ms"]
    assert d["aggregates"]["decode_engine_tps"]["n"] == 2


def test_auto_falls_back_to_python_when_the_library_is_missing(tmp_path, harness_cli):
    missing = tmp_path / "missing" / native.LIB_NAME
    r = _run(harness_cli, tmp_path, "bench.timing=auto", "bench.repetitions=1", env={native.ENV_VAR: str(missing)})
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = list((tmp_path / "n").glob("*/run.json"))
    d = json.loads(path.read_text())
    assert d["status"] == "ok" and d["timing_path"] == d["provenance"]["timing_path"] == "python"
    nat = d["provenance"]["native"]
    assert nat["usable"] is False and "not found" in nat["reason"] and nat["path"] == str(missing)
    assert nat["requested"] == "auto"
    rep = d["repetitions"][0]  # the python path records the engine/sampling split too
    assert rep["decode_engine_ms"] > 0 and rep["sampling_ms"] > 0 and rep["decode_engine_tps"] > 0


def test_timing_native_without_a_usable_library_is_one_line_and_exit_2(tmp_path, harness_cli):
    missing = tmp_path / "missing" / native.LIB_NAME
    r = _run(harness_cli, tmp_path, "bench.timing=native", env={native.ENV_VAR: str(missing)})
    assert r.returncode == 2, (r.stdout[-1000:], r.stderr[-1000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: bench.timing:") and "not available" in lines[0] and str(missing) in lines[0]
    assert not list(tmp_path.rglob("run.json"))
