"""The CLI as a user meets it: help without the engine, bad input stops before any load with one
line and exit code 2, models and doctor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, one_error_line


def test_help_does_not_import_the_engine_or_hydra():
    code = ("import sys, harness.cli as c; rc = c.main(['--help']); "
            "heavy = [m for m in ('llama_cpp', 'hydra', 'pandas', 'numpy') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0
    assert "usage: harness" in r.stdout and "run -m" in r.stdout
    assert "HEAVY []" in r.stdout


def test_unknown_command_exits_2(harness_cli, tmp_path):
    r = harness_cli("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and "unknown command" in r.stderr


def _bad_gguf_files(tmp_path: Path, model_path: Path) -> dict[str, Path]:
    bad_magic = tmp_path / "bad.gguf"
    bad_magic.write_bytes(b"NOTGGUF" + b"\0" * 64)
    truncated = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as f:
        truncated.write_bytes(f.read(4_000_000))
    folder = tmp_path / "dir.gguf"
    folder.mkdir()
    return {"bad_magic": bad_magic, "truncated": truncated, "dir": folder}


BAD_INPUT = [
    ("runtime.n_ctx=-5", "runtime.n_ctx", "positive integer"),
    ("runtime.n_ctx=0", "runtime.n_ctx", "positive integer"),
    ("sampling.temperature=-1", "sampling.temperature", ">= 0"),
    ("sampling.top_p=0", "sampling.top_p", "(0, 1]"),
    ("sampling.top_p=1.5", "sampling.top_p", "(0, 1]"),
    ("sampling.top_k=-1", "sampling.top_k", "non-negative"),
    ("bench.repetitions=0", "bench.repetitions", "positive integer"),
    ("runtime.flash_attn=maybe", "runtime.flash_attn", "on|off|auto"),
    ("runtime.n_gpu_layers=abc", "runtime.n_gpu_layers", "percentage"),
    ("bench.timing=native", "bench.timing", "not available"),
    ("runtime.type_k=q3", "runtime.type_k", "q8_0"),
    ("model.path=/nonexistent/model.gguf", "model.path", "/nonexistent/model.gguf"),
    ("model.path={dir}", "model.path", "directory"),
    ("model.path={bad_magic}", "model.path", "not a GGUF"),
    ("model.path={truncated}", "model.path", "truncated"),
]


@pytest.mark.slow
@pytest.mark.parametrize("override,key,allowed", BAD_INPUT, ids=[b[0].split("=")[0] + "=" + b[0].split("=")[1][:12] for b in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(override, key, allowed, tmp_path, harness_cli, model_path):
    override = override.format(**_bad_gguf_files(tmp_path, model_path))
    # bench.timing=native is bad input only where the native library is unusable: hide it.
    r = harness_cli("run", *TINY, override, f"results_dir={tmp_path / 'res'}", "sweep_name=b", cwd=tmp_path,
                    env={"HARNESS_NATIVE_LIB": str(tmp_path / "missing" / "libharness_native.so")})
    assert r.returncode == 2, (r.stdout[-1000:], r.stderr[-1000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {key}:") and allowed in lines[0]
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "res").rglob("run.json"))  # nothing ran, nothing recorded


@pytest.mark.slow
def test_bad_point_in_a_sweep_stops_the_whole_sweep_before_any_load(tmp_path, harness_cli, model_path):
    r = harness_cli("run", "-m", "runtime.n_ctx=256,-5", *TINY, f"results_dir={tmp_path}", "sweep_name=b",
                    cwd=tmp_path)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: runtime.n_ctx: must be a positive integer, got -5")
    assert "runtime.n_ctx=-5" in err[0]  # names the sweep point
    assert not list(tmp_path.rglob("run.json"))  # the good point did not run either


@pytest.mark.slow
def test_missing_model_says_where_it_looked_and_how_to_get_it(tmp_path, harness_cli):
    r = harness_cli("run", "model=gemma3_1b", *TINY, f"results_dir={tmp_path}", cwd=tmp_path,
                    env={"HARNESS_MODELS": str(tmp_path / "nowhere")})
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "nowhere") in line and "HARNESS_MODELS" in line and "gemma-3-1b" in line


@pytest.mark.slow
def test_models_lists_resolved_and_missing_models(tmp_path, harness_cli, model_path):
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(model_path, models / "gemma-3-1b-it-Q4_K_M.gguf")
    r = harness_cli("models", cwd=tmp_path, env={"HARNESS_MODELS": str(models), "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("│ gemma3")}
    assert "ok" in lines["gemma3_270m"] and "Q4_K_M" in lines["gemma3_270m"] and "18" in lines["gemma3_270m"]
    assert "ok" in lines["gemma3_1b"] and "gemma-3-1b-it-Q4_K_M.gguf" in lines["gemma3_1b"]
    assert "missing" in lines["gemma3_27b"]


@pytest.mark.slow
def test_doctor_reports_engine_nvml_and_default_model(tmp_path, harness_cli, model_path):
    r = harness_cli("doctor", cwd=tmp_path, env={"COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "llama-cpp-python 0.3" in out
    assert "GPU offload support:" in out
    assert "NVML" in out
    assert str(model_path) in out and "gemma3" in out


@pytest.mark.slow
def test_single_run_writes_one_folder(tmp_path, harness_cli, model_path):
    r = harness_cli("run", *TINY, "bench.repetitions=1", f"results_dir={tmp_path}", "sweep_name=one", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "1 ok, 0 failed, 0 skipped"
    runs = list((tmp_path / "one").glob("*/run.json"))
    assert len(runs) == 1
    assert (tmp_path / "one" / "runs.csv").is_file() and (tmp_path / "one" / "sweep.json").is_file()


def test_compose_matches_the_cli_config_tree():
    """harness.hydra_conf.compose gives what a job sees: groups, defaults and overrides."""
    from harness.config import validate
    from harness.hydra_conf import compose

    preset = validate(compose(["+sweep=quick"]))
    assert preset.workload.name == "insight_agent"  # the preset picks its workload
    assert preset.bench.repetitions == 3 and preset.workload.max_tokens == 64
    d = compose(["workload=pp512_tg128", "runtime.n_ctx=1024", "+sweep=quick"])
    rc = validate(d)
    assert rc.workload.name == "pp512_tg128"  # the command line wins over the preset's choice
    assert rc.runtime.n_ctx == 1024 and rc.bench.repetitions == 3
    assert rc.sweep_name == "composed" and rc.model.name == "gemma3_270m"


def test_models_table_fits_columns(harness_cli, tmp_path):
    r = harness_cli("models", cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines and max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    wide = harness_cli("models", cwd=tmp_path, env={"COLUMNS": "300"})
    assert max(len(ln) for ln in wide.stdout.splitlines()) > 80  # it is the width, not a fixed cut


def test_doctor_prints_readable_lines_not_python_objects(harness_cli, tmp_path):
    r = harness_cli("doctor", cwd=tmp_path, env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "{'" not in r.stdout and "': " not in r.stdout, r.stdout
    first = r.stdout.splitlines()[0]
    assert first.startswith("harness ") and ("git " in first or "not a git checkout" in first)


RUNTIME_KEYS = "keys of runtime: n_gpu_layers, n_ctx, n_batch"
MODELS = "available: gemma3_12b, gemma3_1b, gemma3_270m, gemma3_27b, gemma3_4b, smollm2_135m"

# Overrides Hydra cannot compose: the first line of Hydra's several-line message used to come with
# exit 1 (and, for a sweep, a warning from the callback first).
UNCOMPOSABLE = [
    (["runtime.no_such_key=1"], f"error: runtime.no_such_key: is not a configuration key; {RUNTIME_KEYS}"),
    (["-m", "runtime.no_such_key=1,2"], f"error: runtime.no_such_key: is not a configuration key; {RUNTIME_KEYS}"),
    (["-m", "runtime.n_ctx=256,512", "runtime.no_such_key=1"], "error: runtime.no_such_key: is not a configuration key"),
    (["model=llama99"], f"error: model: no option llama99; {MODELS}"),
    (["-m", "model=gemma3_270m,llama99"], f"error: model: no option llama99; {MODELS}"),
    (["workload=nope"], "error: workload: no option nope; available: insight_agent, long_context, pp512_tg128, short_chat"),
    (["-m", "+sweep=nope"], "error: sweep: no option nope; available: chimera_grid, quick, variants"),
    (["sweep=quick"], "error: sweep: is a config group outside the defaults: add it with +sweep=quick"),
    (["runtime.n_ctx=[1,"], "error: runtime.n_ctx: cannot parse 'runtime.n_ctx=[1,'"),
]


@pytest.mark.parametrize("args,start", UNCOMPOSABLE, ids=[" ".join(a) for a, _ in UNCOMPOSABLE])
def test_unknown_key_or_option_is_one_line_and_exit_2(args, start, tmp_path, harness_cli):
    r = harness_cli("run", *args, *TINY, f"results_dir={tmp_path / 'res'}", cwd=tmp_path)
    assert one_error_line(r).startswith(start)
    assert not (tmp_path / "res").exists()  # refused before Hydra made a folder, let alone measured


def test_append_syntax_stays_legal(tmp_path, harness_cli):
    """`+key=value` adds a key (Hydra's append syntax): not an unknown key."""
    r = harness_cli("run", "+foo=1", "--cfg", "job", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "foo: 1" in r.stdout


@pytest.mark.parametrize("sweep", [[], ["-m", "runtime.n_ctx=256,512"]], ids=["run", "sweep"])
def test_results_dir_under_a_file_is_one_line_and_exit_2(sweep, tmp_path, harness_cli):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder\n")
    r = harness_cli("run", *sweep, *TINY, f"results_dir={blocker / 'x'}", cwd=tmp_path)
    line = one_error_line(r)
    assert line.startswith(f"error: results_dir: cannot hold results ({blocker} is a file, not a directory)")
    assert str(blocker / "x") in line
    assert blocker.read_text() == "not a folder\n"
    assert not list(tmp_path.rglob("run.json"))


def _unprivileged() -> list[str]:
    """A command prefix that runs as nobody (root ignores directory permission bits)."""
    import shutil

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed: cannot run the harness as an unprivileged user")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import harness.hydra_conf"], capture_output=True,
                           text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"the harness cannot run as uid 65534 here: {probe.stderr.strip()[-300:]}")
    return prefix


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [[], ["-m", "runtime.n_ctx=256,512"]], ids=["run", "sweep"])
def test_read_only_results_dir_is_one_line_and_exit_2(sweep):
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    prefix = _unprivileged()
    base = Path(tempfile.mkdtemp(prefix="harness-ro-"))  # outside pytest's root-only tmp_path
    try:
        base.chmod(0o755)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        ro.chmod(0o555)
        env = {**os.environ, "HOME": str(base), "XDG_CACHE_HOME": str(base / "cache")}
        env.pop("HYDRA_FULL_ERROR", None)
        r = subprocess.run([*prefix, sys.executable, "-m", "harness", "run", *sweep, *TINY,
                            f"results_dir={ro / 'x'}"], capture_output=True, text=True, cwd=base, env=env,
                           timeout=120)
        line = one_error_line(r)
        assert line.startswith(f"error: results_dir: cannot hold results ({ro} is not writable: permission denied)")
        assert not list(base.rglob("run.json"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


EXPERIMENT_INPUT = [
    (["runtime.no_such_key=1"], f"error: runtime.no_such_key: cannot be composed: is not a configuration key; {RUNTIME_KEYS}"),
    (["model=llama99"], f"error: model: cannot be composed: no option llama99; {MODELS}"),
    (["results_dir={blocker}/x"], "error: results_dir: cannot hold results ({blocker} is a file, not a directory)"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,start", EXPERIMENT_INPUT, ids=[a[0].split("=")[0] for a, _ in EXPERIMENT_INPUT])
def test_bad_experiment_overrides_are_one_line_and_exit_2(args, start, tmp_path, harness_cli):
    blocker = tmp_path / "somefile"
    blocker.write_text("")
    args = [a.format(blocker=blocker) for a in args]
    r = harness_cli("experiment", "concurrent_agents", f"results_dir={tmp_path / 'res'}", *args,
                    "experiment.repetitions=1", "experiment.k=[1]", cwd=tmp_path)
    assert one_error_line(r).startswith(start.format(blocker=blocker))
    assert not list(tmp_path.rglob("run.json")) and not list(tmp_path.rglob("experiment.json"))


AGENT_INPUT = [
    (["runtime.no_such_key=1"], f"error: runtime.no_such_key: is not a configuration key; {RUNTIME_KEYS}"),
    (["agent.no_such_key=1"], "error: agent.no_such_key: is not a configuration key; keys of agent: max_tokens"),
    (["model=llama99"], f"error: model: no option llama99; {MODELS}"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,start", AGENT_INPUT, ids=[a[0].split("=")[0] for a, _ in AGENT_INPUT])
def test_bad_agent_overrides_are_one_line_and_exit_2(args, start, tmp_path, harness_cli):
    results = tmp_path / "results"
    results.mkdir()
    r = harness_cli("agent", str(results), "--out", str(tmp_path / "out"), *args, cwd=tmp_path)
    assert one_error_line(r).startswith(start)
    assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("run.json"))


@pytest.mark.slow
def test_sweep_output_has_progress_lines_but_not_hydras_launcher_lines(tmp_path, harness_cli, model_path):
    r = harness_cli("run", "-m", "runtime.n_ctx=256,512", "workload.max_tokens=4", "bench.repetitions=1",
                    "bench.warmup=0", "report.auto=false", f"results_dir={tmp_path}", "sweep_name=s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    # Hydra's launcher announced every job with all of its overrides: "Launching 2 jobs locally",
    # "[HYDRA] \t#0 : runtime.n_ctx=256 workload.max_tokens=4 ..."
    assert "Launching" not in out and "#0 :" not in out and "#1 :" not in out, out
    assert "point 1/2 " in r.stderr and "point 2/2 " in r.stderr
    assert r.stdout.strip().splitlines()[-1] == "2 ok, 0 failed, 0 skipped"
