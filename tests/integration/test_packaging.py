"""The Hydra config tree ships inside the wheel, not only in the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


def test_wheel_contains_the_config_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("harness", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("harness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected and {f"harness/conf/{e}" for e in expected} <= names
    assert "harness/conf/sweep/quick.yaml" in names and "harness/cli.py" in names
    for module in ("harness/analysis/ingest.py", "harness/analysis/formats/llamabench.py", "harness/report/build.py",
                   "harness/telemetry/sampler.py", "harness/agent/narrative.py", "harness/experiments/command.py",
                   "harness/devicelock.py"):
        assert module in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "harness = harness.cli:main" in entry
