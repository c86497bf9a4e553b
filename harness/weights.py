"""Which weights a model config runs on: its real file, or a performance twin of it.

A performance twin (harness.twin) is a GGUF with the real model's architecture, shapes, tokenizer
and tensor types and synthetic weights: dense inference does the same work whatever the weights,
so it runs at the real model's speed, and its text is noise. Twins are used only when asked for:

    model.weights=real   the model file, found as always (a missing one is ModelNotFound; its
                         message mentions model.weights=twin when the model has a twin_spec)
    model.weights=twin   a twin, made once from the real file's header when the file is found,
                         else from the architecture spec model.twin_spec, and cached as
                         <cache>/twins/<name>-<seed>-<source hash>.gguf

    w = resolve_weights(rc.model)   # at pre-flight, before anything loads
    w.path, w.twin (the record's twin fields, None for real weights), w.note() (one line)

Making a twin takes a lock per cached file (one process makes it, the others wait and find it),
and harness.twin writes under a temporary name renamed into place, so no sweep sees or leaves a
partial twin and a twin an engine has mapped is never rewritten. A cached file is used only when
its header carries the twin marker.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from .config import ConfigError, ModelConfig
from .gguf import read_gguf_info
from .modelfile import BadModelsDir, ModelNotFound, cache_dir, resolve, sha256_file

TWINS_DIR = "twins"
_MARKER_PREFIX = "harness.twin."  # harness.twin.MARKER_PREFIX (tested equal), without importing the writer
_TWIN_VERSION = 2  # harness.twin.TWIN_VERSION (tested equal): a cached twin of another version is made again
# The record's twin fields, from the GGUF marker's keys (harness.twin.<key>).
_RECORD_FIELDS = (("synthetic", "synthetic"), ("of", "twin_of"), ("seed", "twin_seed"),
                  ("source_sha256", "twin_source_sha256"), ("version", "twin_version"))


@dataclass(frozen=True)
class Weights:
    """What a model config resolved to. `twin` is None for real weights."""

    model: str  # the model config's name
    path: Path
    twin: dict | None = None  # twin_record() of the file's marker
    made_s: float | None = None  # seconds this call spent making the twin (None: not made here)
    source: str | None = None  # what the twin was made from: "header of PATH" or "spec NAME"

    def note(self) -> str | None:
        """The one line a sweep prints about a twin at pre-flight (None for real weights)."""
        if self.twin is None:
            return None
        what = (f"performance twin of {self.twin.get('twin_of') or self.model} "
                f"(synthetic weights, seed {self.twin.get('twin_seed')})")
        if self.made_s is not None:
            return f"model {self.model}: made a {what} from the {self.source} in {self.made_s:.1f} s: {self.path}"
        return f"model {self.model}: {what}: {self.path}"


def twin_record(marker: Mapping | None) -> dict | None:
    """The twin fields of run.json (synthetic, twin_of, twin_seed, twin_source_sha256,
    twin_version) from a GGUF twin marker (keys with or without the harness.twin. prefix);
    None when there is no marker (real weights)."""
    if not marker:
        return None
    m = {str(k)[len(_MARKER_PREFIX):] if str(k).startswith(_MARKER_PREFIX) else str(k): v for k, v in marker.items()}
    out = {rec: m.get(key) for key, rec in _RECORD_FIELDS}
    out["synthetic"] = True  # a marker is only ever written on a twin
    return out


def metadata_twin(metadata: Mapping) -> dict | None:
    """twin_record of a GGUF's metadata (GGUFInfo.metadata), read as harness.twin.twin_marker
    reads a file (a twin is a file whose harness.twin.synthetic is true), without a second read of
    the header or harness.twin's imports (numpy, gguf-py) on every plan; None for real weights."""
    if metadata.get(_MARKER_PREFIX + "synthetic") is not True:
        return None
    return twin_record({k: v for k, v in metadata.items() if str(k).startswith(_MARKER_PREFIX)})


def file_twin(path: str | os.PathLike) -> dict | None:
    """twin_record of the GGUF at `path` (its header only; None for real weights). Raises
    GGUFError for a file that is not a readable GGUF."""
    return metadata_twin(read_gguf_info(path).metadata)


def twins_dir() -> Path:
    return cache_dir() / TWINS_DIR


def twin_path(name: str, seed: int, source_hash: str) -> Path:
    """Where the twin of model `name` with `seed`, made from a source with `source_hash`, is cached."""
    return twins_dir() / f"{name}-{seed}-{source_hash[:12]}.gguf"


def spec_hash(spec: str) -> str:
    """The cache key of a twin made from an architecture spec: the digest of the spec's numbers,
    so a corrected spec never reuses a twin of the old one. Raises ConfigError for a spec that
    does not exist."""
    from .twin_spec import SPECS

    if spec not in SPECS:
        raise ConfigError("model.twin_spec", spec, "must be one of " + "|".join(SPECS) + " or null")
    return SPECS[spec].digest()


def resolve_weights(model: ModelConfig) -> Weights:
    """The weights `model` runs on (see the module docstring). Raises ModelNotFound / BadModelsDir
    for a real model that is not there, ConfigError when a twin cannot be made."""
    if model.weights != "twin":
        path = resolve(model)
        return Weights(model.name, path)
    try:
        real: Path | None = resolve(replace(model, weights="real", twin_spec=None))
        why = ""
    except BadModelsDir:
        raise
    except ModelNotFound as e:
        real, why = None, str(e)
    if real is not None and real.is_file():
        existing = _marker_of(real)
        if existing is not None:  # the file found is a twin already: use it as it is
            return Weights(model.name, real, existing)
        source, key, what, blame = str(real), _sha(real), f"header of {real}", "model.path"
    elif model.twin_spec:
        source, key, what = model.twin_spec, spec_hash(model.twin_spec), f"architecture spec {model.twin_spec}"
        blame = "model.twin_spec"
    else:
        raise ConfigError("model.weights", "twin",
                          f"needs the real file's header or an architecture spec (model.twin_spec) to make a "
                          f"performance twin; model {model.name} has no spec and its file is missing ({why})")
    return ensure_twin(model.name, twin_path(model.name, model.twin_seed, key), source, model.twin_seed, what, blame)


def _current(twin: dict | None) -> dict | None:
    """`twin` when it was written by this version of the twin writer, else None (made again: an
    older writer's twin may run at another speed, e.g. version 1's one block scale per tensor)."""
    return twin if twin is not None and twin.get("twin_version") == _TWIN_VERSION else None


def ensure_twin(name: str, path: Path, source: str, seed: int, what: str, blame: str = "model.weights") -> Weights:
    """The twin at `path`, made from `source` (a GGUF path or a spec name; `what` says which in
    words, `blame` is the config key named when it cannot be made) unless a valid one is cached.
    One process makes it while others wait on the lock, then find it made."""
    import fcntl

    from .twin import TwinError, make_twin  # the writer (numpy, gguf-py) only when a twin is made

    found = _current(_marker_of(path))
    if found is not None:
        return Weights(name, path, found)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, whatever happens
            found = _current(_marker_of(path))
            if found is not None:  # made by another process while this one waited
                return Weights(name, path, found)
            t0 = time.perf_counter()
            # written under a temporary name and renamed into place: a new inode, so a reader
            # never sees a partial twin and an engine's mapping of an older file stays intact
            with _quiet_writer():
                make_twin(source, path, seed=seed)
            made_s = time.perf_counter() - t0
    except OSError as e:
        raise ConfigError("model.weights", "twin",
                          f"needs a writable cache for its twin ({e.filename or path}: {e.strerror or e})") from None
    except TwinError as e:  # a spec or header make_twin cannot turn into a twin
        raise ConfigError(blame, source, f"cannot be made into a performance twin ({e})") from None
    twin = _marker_of(path)
    if twin is None:
        raise ConfigError("model.weights", "twin", f"made a file without a twin marker: {path}")
    return Weights(name, path, twin, made_s=made_s, source=what)


@contextmanager
def _quiet_writer():
    """gguf-py's writer logs each file it writes at INFO; in a sweep, where Hydra shows INFO, the
    one line of Weights.note() says it instead."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _marker_of(path: Path) -> dict | None:
    """twin_record of an existing file, None when it is missing or unreadable as a twin."""
    if not path.is_file():
        return None
    try:
        return file_twin(path)
    except (OSError, ValueError):
        return None


def _sha(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise ConfigError("model.path", str(path), f"must be a readable file ({e.strerror or e})") from None
