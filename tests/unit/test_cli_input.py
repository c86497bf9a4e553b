"""Bad command-line input caught before Hydra runs anything: overrides Hydra cannot compose become one
line naming the key or config group and what exists instead; a results_dir that cannot hold results
is named with the path in the way."""

from __future__ import annotations

import errno
import os

import pytest

from harness.config import ConfigError, writable_dir_problem
from harness.hydra_conf import check_run_args


def _refused(args: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        check_run_args(args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_key_lists_the_keys_of_its_section():
    msg = _refused(["runtime.no_such_key=1"])
    assert msg.startswith("runtime.no_such_key: is not a configuration key; keys of runtime: n_gpu_layers, n_ctx, ")
    assert "require_gpu" in msg


def test_unknown_top_level_key_lists_the_top_level_keys():
    msg = _refused(["no_such_key=1"])
    assert msg.startswith("no_such_key: is not a configuration key; top-level keys: ")
    assert "results_dir" in msg and "runtime" in msg


def test_unknown_key_in_a_sweep_that_does_not_vary_is_refused_before_the_sweep():
    assert _refused(["-m", "runtime.n_ctx=256,512", "runtime.no_such_key=1"]).startswith("runtime.no_such_key: ")


def test_unknown_group_option_lists_the_options():
    assert _refused(["model=llama99"]) == ("model: no option llama99; available: gemma3_12b, gemma3_1b, "
                                           "gemma3_270m, gemma3_27b, gemma3_4b, smollm2_135m")
    assert _refused(["workload=nope"]).startswith("workload: no option nope; available: insight_agent, ")
    assert _refused(["+sweep=nope"]) == "sweep: no option nope; available: chimera_grid, quick, variants"
    assert _refused(["hydra/launcher=nope"]).startswith("hydra/launcher: no option nope; available: ")


def test_group_outside_the_defaults_says_to_add_it():
    assert _refused(["sweep=quick"]).startswith("sweep: is a config group outside the defaults: add it with +sweep=quick")


def test_bad_override_syntax_is_one_line():
    assert _refused(["runtime.n_ctx=[1,"]).startswith("runtime.n_ctx: cannot parse 'runtime.n_ctx=[1,': ")


def test_comma_list_without_multirun_is_one_line():
    assert _refused(["runtime.n_ctx=256,512"]).startswith("runtime.n_ctx: cannot be applied: Ambiguous value")


@pytest.mark.parametrize("args", [
    ["+foo=1"],                                  # Hydra's append syntax adds a key
    ["-m", "runtime.n_ctx=256,512"],
    ["-m", "model=gemma3_270m,llama99"],         # each point is composed by the pre-flight
    ["-m", "+sweep=quick"],
    ["--cfg", "job", "runtime.n_ctx=512"],
    ["--no-such-flag"],                          # Hydra's own argument parser answers that
])
def test_what_composes_or_is_hydras_to_answer_passes(args):
    check_run_args(args)


def test_composition_errors_of_experiments_name_the_key():
    from harness.experiments.command import compose

    with pytest.raises(ConfigError) as e:
        compose(["+experiment=concurrent_agents", "runtime.no_such_key=1"])
    assert str(e.value).startswith("runtime.no_such_key: cannot be composed: is not a configuration key; keys of runtime: ")
    with pytest.raises(ConfigError) as e:
        compose(["+experiment=concurrent_agents", "model=llama99"])
    assert str(e.value).startswith("model: cannot be composed: no option llama99; available: gemma3_12b, ")


def test_composition_errors_of_the_agent_name_the_key():
    from harness.agent.narrative import prepare

    with pytest.raises(ConfigError) as e:
        prepare(["agent.no_such_key=1"])
    assert str(e.value) == ("agent.no_such_key: is not a configuration key; keys of agent: max_tokens, min_rows, "
                            "system, task, response_prefix")
    with pytest.raises(ConfigError) as e:
        prepare(["workload=nope"])
    assert str(e.value).startswith("workload: no option nope; available: insight_agent, ")


# results_dir


def test_a_new_or_existing_writable_folder_is_fine(tmp_path):
    assert writable_dir_problem(str(tmp_path)) is None
    assert writable_dir_problem(str(tmp_path / "a" / "b")) is None


def test_a_folder_under_a_file_names_the_file(tmp_path):
    f = tmp_path / "somefile"
    f.write_text("")
    assert writable_dir_problem(str(f / "x" / "y")) == f"{f} is a file, not a directory"
    assert writable_dir_problem(str(f)) == f"{f} is a file, not a directory"


def test_a_fifo_is_not_a_directory(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert writable_dir_problem(str(fifo / "x")) == f"{fifo} is not a directory"


def test_a_folder_without_write_permission_is_named(tmp_path, monkeypatch):
    # Root ignores permission bits: the access check is what decides, so it is what is replaced.
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    assert writable_dir_problem(str(ro / "x")) == f"{ro} is not writable: {os.strerror(errno.EACCES).lower()}"


def test_a_read_only_file_system_is_named(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    class RO:
        def __init__(self, st):
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real_access(p, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda p: RO(real_statvfs(p)))
    assert writable_dir_problem(str(ro)) == f"{ro} is not writable: {os.strerror(errno.EROFS).lower()}"


def test_a_relative_results_dir_is_checked_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "results").write_text("")
    monkeypatch.chdir(tmp_path)
    assert writable_dir_problem("results") == f"{tmp_path / 'results'} is a file, not a directory"
