"""Tests for harness.store: safe job-folder names, atomic writes, reading results back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harness import store
from harness.store import MAX_JOB_NAME, atomic_write_text, job_dirname, job_dirs, read_run, write_json

# --- job_dirname -------------------------------------------------------------------------------------

READABLE = [
    "runtime.n_ctx=512,sampling.temperature=0.2",
    "runtime.n_gpu_layers=50%,runtime.flash_attn=on",
    "model=gemma3_1b",
    "sampling.top_p=0.9,sampling.seed=7",
    "runtime.type_k=q8_0,runtime.type_v=q8_0,workload=pp512_tg128",
    "a+b@c-d",
]

HOSTILE = [
    "../../etc",
    "/abs/path",
    "a/../../b",
    "x\x00y",
    "\n",
    "." * 300,
    "é" * 500,
    "x" * 10_000,
    "z" * 10_000 + "/",
    "..",
    ".",
    "./",
    "..\\..\\windows",
    "C:\\Windows\\system32",
    ".hidden=1",
    "_.-._",
    "\t\r\x1b[31mred\x7f",
    "a\u2028b\u0085c",
    "\ud800lone-surrogate",
    "model=../../../../tmp/evil",
    "key=va lue with spaces",
    "emoji=🦙🦙",
    "-",
    "~",
    "$HOME",
    "a" * 119 + "/",
    "a" * 120,
    "a" * 121,
    "." * 119 + "a",
]


def _id(s: str) -> str:
    return ascii(s)[:40]


@pytest.mark.parametrize("raw", READABLE, ids=[_id(s) for s in READABLE])
def test_readable_overrides_stay_unchanged(raw):
    assert job_dirname(raw) == raw


@pytest.mark.parametrize("raw", [None, ""])
def test_no_overrides_gives_a_name(raw):
    name = job_dirname(raw)
    assert name == "default"


def _check_safe(name: str) -> None:
    assert isinstance(name, str)
    assert name not in ("", ".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert all(c.isprintable() and not c.isspace() for c in name)
    assert len(name) <= MAX_JOB_NAME


@pytest.mark.parametrize("raw", HOSTILE + READABLE, ids=[_id(s) for s in HOSTILE + READABLE])
def test_names_are_always_safe(raw):
    _check_safe(job_dirname(raw))


@pytest.mark.parametrize("raw", HOSTILE, ids=[_id(s) for s in HOSTILE])
def test_names_resolve_inside_the_sweep_folder(tmp_path, raw):
    name = job_dirname(raw)
    target = (tmp_path / name).resolve()
    assert target.parent == tmp_path.resolve()
    # And the folder can really be created there.
    (tmp_path / name).mkdir()
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("raw", HOSTILE + READABLE, ids=[_id(s) for s in HOSTILE + READABLE])
def test_deterministic(raw):
    assert job_dirname(raw) == job_dirname(raw)


@pytest.mark.parametrize("group", [
    ["a/b", "a_b", "a?b", "a\\b", "a b", "a\x00b"],
    ["../x", "__x", "x", "._x", "/x"],
    ["x" * 10_000, "x" * 10_001, "x" * 9_999 + "y", "x" * 200],
    ["é" * 500, "ü" * 500, "é" * 499, "\n", "\t", "." * 300, "." * 301],
    ["model=a/b,n=1", "model=a_b,n=1", "model=a:b,n=1"],
])
def test_distinct_inputs_give_distinct_names(group):
    names = [job_dirname(s) for s in group]
    assert len(set(names)) == len(group), dict(zip(group, names))


@pytest.mark.parametrize("raw", ["x" * 10_000, "runtime.n_ctx=512," * 40])
def test_long_names_are_cut_with_a_hash_suffix(raw):
    name = job_dirname(raw)
    assert len(name) <= MAX_JOB_NAME
    assert name.startswith(raw[:50])


# --- atomic writes ---------------------------------------------------------------------------------------

def _tmp_files(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("text", ["", "hello\n", "ünïcødé ✓\n", "x" * 1_000_000])
def test_atomic_write_text_round_trip(tmp_path, text):
    p = tmp_path / "out.txt"
    atomic_write_text(p, text)
    assert p.read_text(encoding="utf-8") == text
    assert _tmp_files(tmp_path) == []


def test_atomic_write_replaces_and_creates_parents(tmp_path):
    p = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert _tmp_files(p.parent) == []
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.txt"]


def test_failed_replace_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "run.json"
    atomic_write_text(p, "old content")

    def fail(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(p, "new content")
    monkeypatch.undo()
    assert p.read_text() == "old content"
    assert _tmp_files(tmp_path) == []
    assert [x.name for x in tmp_path.iterdir()] == ["run.json"]


def test_failed_write_midway_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "run.json"
    atomic_write_text(p, "old content")

    def fail(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="fsync failed"):
        atomic_write_text(p, "new content")
    monkeypatch.undo()
    assert p.read_text() == "old content"
    assert _tmp_files(tmp_path) == []


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "run.json"

    def fail(*a, **k):
        raise OSError("no")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_text(p, "content")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_written_files_are_shared_readable(tmp_path, umask_022):
    p = tmp_path / "out.txt"
    atomic_write_text(p, "x")
    mode = stat.S_IMODE(p.stat().st_mode)
    assert mode != 0o600
    assert mode & 0o044 == 0o044  # group and other can read
    assert mode & 0o022 == 0  # nobody else can write
    assert mode == 0o644


# --- write_json / write_csv --------------------------------------------------------------------------------

def test_write_json_round_trip(tmp_path):
    p = tmp_path / "run.json"
    obj = {"a": 1, "b": [1.5, None, "x"], "c": {"d": True}}
    write_json(p, obj)
    text = p.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == obj


def test_write_json_refuses_values_json_cannot_hold(tmp_path):
    """A Path (or any non-JSON value) is a bug in the record, not something to stringify silently."""
    p = tmp_path / "run.json"
    with pytest.raises(TypeError):
        write_json(p, {"path": Path("/x")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_write_json_rejects_non_finite_and_writes_nothing(tmp_path, bad):
    p = tmp_path / "run.json"
    with pytest.raises(ValueError):
        write_json(p, {"x": [1.0, bad]})
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_json_failure_keeps_old_file(tmp_path):
    p = tmp_path / "run.json"
    write_json(p, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(p, {"x": float("nan")})
    assert json.loads(p.read_text()) == {"ok": 1}


def test_write_csv(tmp_path):
    p = tmp_path / "runs.csv"
    store.write_csv(p, ["a", "b"], [[1, "x,y"], [None, 'q"uote']])
    assert p.read_text() == 'a,b\n1,"x,y"\n,"q""uote"\n'


# --- reading results back --------------------------------------------------------------------------------

def _job(sweep: Path, name: str, content: str | None = '{"status": "ok"}') -> Path:
    d = sweep / name
    d.mkdir(parents=True)
    if content is not None:
        (d / store.RUN_FILE).write_text(content)
    return d


def test_job_dirs_filters(tmp_path):
    a = _job(tmp_path, "a=1")
    b = _job(tmp_path, "b=2")
    _job(tmp_path, ".hydra")
    _job(tmp_path, ".tmp-x")
    _job(tmp_path, "no_run_json", None)
    (tmp_path / "stray.json").write_text("{}")
    (tmp_path / "c=3").mkdir()
    (tmp_path / "c=3" / store.RUN_FILE).mkdir()  # a folder named run.json is not a result
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    assert job_dirs(tmp_path) == [a, b]


def test_job_dirs_of_missing_or_file(tmp_path):
    assert job_dirs(tmp_path / "missing") == []
    f = tmp_path / "f"
    f.write_text("")
    assert job_dirs(f) == []


def test_read_run_ok(tmp_path):
    d = _job(tmp_path, "j", json.dumps({"status": "ok", "x": [1, 2]}))
    assert read_run(d) == {"status": "ok", "x": [1, 2]}


@pytest.mark.parametrize("content", [
    '{"status": "ok", "aggregates": {"ttft',  # truncated
    "",
    "[1, 2]",  # valid JSON, not an object
    "null",
    '"ok"',
    "{bad json}",
])
def test_read_run_unusable_is_none(tmp_path, content):
    d = _job(tmp_path, "j", content)
    assert read_run(d) is None


def test_read_run_truncated_real_record(tmp_path):
    d = tmp_path / "j"
    write_json(d / store.RUN_FILE, {"status": "ok", "values": list(range(100))})
    full = (d / store.RUN_FILE).read_bytes()
    (d / store.RUN_FILE).write_bytes(full[: len(full) // 2])
    assert read_run(d) is None


def test_read_run_invalid_utf8_and_missing(tmp_path):
    d = tmp_path / "j"
    d.mkdir()
    assert read_run(d) is None
    (d / store.RUN_FILE).write_bytes(b'{"status": "\xff\xfe"}')
    assert read_run(d) is None
