"""The wheel: every module of the package and the whole Hydra config tree, found without a
hand-written package list, and built without setuptools' warnings about data folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

ABSENT = "is absent from the `packages` configuration"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel file names, pip's full output) for a wheel built from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("harness", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # -v: pip shows the build backend's own output, where setuptools prints its warnings.
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (wheel,) = (tmp / "dist").glob("harness-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    return names, r.stdout + r.stderr, entry


def test_wheel_contains_every_module_of_the_source_tree(built):
    names, _, _ = built
    # Walked, not listed: a subpackage added tomorrow is checked too (one without __init__.py
    # is not found as a package and fails here).
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "harness").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert "harness/cli.py" in modules and "harness/telemetry/sampler.py" in modules
    missing = sorted(modules - names)
    assert not missing, f"modules missing from the wheel: {missing}"


def test_wheel_contains_the_config_tree(built):
    names, _, _ = built
    expected = {f"harness/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert "harness/conf/sweep/quick.yaml" in expected and "harness/conf/hydra/launcher/local.yaml" in expected
    assert not sorted(expected - names), f"config files missing from the wheel: {sorted(expected - names)}"
    assert "harness/conf/__init__.py" in names


def test_wheel_build_has_no_package_data_warnings(built):
    _, output, _ = built
    assert "Building wheel for harness" in output  # the backend's output is there to be checked
    assert ABSENT not in output, next(line for line in output.splitlines() if ABSENT in line)


def test_wheel_declares_the_entry_points(built):
    _, _, entry = built
    assert "harness = harness.cli:main" in entry
    assert "harness = harness.pytest_plugin" in entry
