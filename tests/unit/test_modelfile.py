"""Tests for harness.modelfile: $HARNESS_MODELS entries are checked, files found by name."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config import ConfigError, ModelConfig, validate
from harness.modelfile import BadModelsDir, ModelNotFound, resolve, sha256_file
from harness.gguf import NotARegularFile
from harness.plan import make_plan

CONF = Path(__file__).resolve().parents[2] / "conf"
MODEL = ModelConfig(name="tiny", source="file", files=("tiny*.gguf",))


@pytest.fixture
def models(tmp_path, monkeypatch):
    """A directory holding tiny-q4.gguf; the working directory has no ./models."""
    d = tmp_path / "models-a"
    d.mkdir()
    (d / "tiny-q4.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    return d


def _env(monkeypatch, *entries) -> None:
    monkeypatch.setenv("HARNESS_MODELS", os.pathsep.join(str(e) for e in entries))


def test_found_in_a_listed_directory(models, monkeypatch):
    _env(monkeypatch, models)
    assert resolve(MODEL) == models / "tiny-q4.gguf"


def test_empty_entries_are_ignored(models, monkeypatch):
    monkeypatch.setenv("HARNESS_MODELS", f"{os.pathsep}{models}{os.pathsep}")
    assert resolve(MODEL) == models / "tiny-q4.gguf"


@pytest.mark.parametrize("make,why", [
    (lambda p: None, "this entry does not exist"),
    (lambda p: p.write_text("x"), "this entry is a regular file, not a directory"),
])
def test_an_entry_that_is_not_a_directory_is_an_error(models, tmp_path, monkeypatch, make, why):
    bad = tmp_path / "typo"
    make(bad)
    # The model is in the first entry, and the bad entry is still an error: the result must not
    # depend on where a typo sits in the list.
    _env(monkeypatch, models, bad)
    with pytest.raises(BadModelsDir) as ei:
        resolve(MODEL)
    msg = str(ei.value)
    assert ei.value.entry == str(bad) and "\n" not in msg
    assert msg.startswith("HARNESS_MODELS: must list existing directories") and why in msg, msg
    assert msg.endswith(f"got {str(bad)!r}") and "tiny*.gguf" in msg


def test_not_consulted_for_an_explicit_path_or_the_package_model(models, tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path / "missing")
    explicit = ModelConfig(name="x", source="file", path=str(models / "tiny-q4.gguf"))
    assert resolve(explicit) == models / "tiny-q4.gguf"


def test_plan_names_the_variable(models, tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path / "missing")
    load = lambda rel: OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=True)  # noqa: E731
    cfg = {"model": load("model/gemma3_1b.yaml"), "runtime": load("runtime/default.yaml"),
           "sampling": load("sampling/default.yaml"), "workload": load("workload/short_chat.yaml"),
           "bench": load("bench/default.yaml")}
    with pytest.raises(ConfigError) as ei:
        make_plan(validate(copy.deepcopy(cfg)), gpu_offload_supported=False)
    assert ei.value.key == "HARNESS_MODELS" and ei.value.value == str(tmp_path / "missing")
    assert str(ei.value).startswith("HARNESS_MODELS: ") and "does not exist" in str(ei.value)


def test_a_fifo_matching_the_name_is_not_a_model(models, monkeypatch):
    os.mkfifo(models / "tiny-aaa.gguf")  # sorts first
    _env(monkeypatch, models)
    assert resolve(MODEL) == models / "tiny-q4.gguf"
    (models / "tiny-q4.gguf").unlink()
    with pytest.raises(ModelNotFound, match="no file matching"):
        resolve(MODEL)


def test_sha256_refuses_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "m.gguf")
    with pytest.raises(NotARegularFile):
        sha256_file(tmp_path / "m.gguf")


def test_the_default_model_file_is_never_rewritten_in_place(monkeypatch, tmp_path):
    """A fresh (or unwritable) sha256 cache must not make the harness re-assemble the default
    model over itself: an engine worker that has the file mapped would die with SIGBUS."""
    from harness.modelfile import default_model_path

    path = default_model_path()
    before = path.stat()
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "fresh"))
    assert default_model_path() == path
    monkeypatch.setenv("HARNESS_CACHE", "/proc/no-such-cache")  # cannot be written
    assert default_model_path() == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
