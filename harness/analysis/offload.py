"""The older tool's offload values: a foreign file's `num_gpu` (or `ngl`) as the layers actually
offloaded, when the model's layer count is known.

Ollama and llama.cpp offload the model's repeating blocks plus its output layer, so a model of B
blocks has B + 1 offloadable layers and any request at or above that is the same configuration
(the older tool swept num_gpu 40..999 on a model of ~34 blocks: one configuration, reported as
many). Our own sweeps record the effective offload (plan.effective_offload); for foreign rows it is
set here from the offloadable layer count of the model, found:
- given by the user (`harness analyze --model-layers N` or `MODEL=N`: the count Ollama's log shows
  as "offloaded N/N layers to GPU", i.e. blocks + 1), or
- read from the model's GGUF found locally: a file named like the model in $HARNESS_MODELS or
  ./models, or the blob an Ollama manifest names ($OLLAMA_MODELS, else ~/.ollama/models).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from .. import gguf, modelfile

OLLAMA_MODEL_MEDIA = "application/vnd.ollama.image.model"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_layers(specs: list[str]) -> dict[str | None, int]:
    """`--model-layers` values ("35" for every model, "gemma3:270m=19") as {model or None: layers}.
    Raises ValueError naming the bad value."""
    out: dict[str | None, int] = {}
    for s in specs:
        model, _, n = s.rpartition("=")
        try:
            k = int(n)
        except ValueError:
            raise ValueError(f"--model-layers: expected N or MODEL=N with N a positive integer, got {s!r}") from None
        if k < 1:
            raise ValueError(f"--model-layers: expected a positive layer count, got {s!r}")
        out[model or None] = k
    return out


def ollama_dirs() -> list[Path]:
    env = os.environ.get("OLLAMA_MODELS")
    return [Path(env)] if env else [Path.home() / ".ollama" / "models"]


def find_gguf(model: str) -> Path | None:
    """A local GGUF of `model` (a file of that name in the model search folders, or an Ollama
    name:tag with a manifest), or None. The name comes from an untrusted file: it is never used as
    a path of its own (only its last part, inside the search folders; no "..")."""
    base = model.replace("\\", "/").rsplit("/", 1)[-1]
    names = {base, base.replace(":", "-"), base.replace(":", "_")}
    for d in modelfile.search_dirs():
        for n in names:
            if not n or n.startswith("."):
                continue
            f = d / (n if n.endswith(".gguf") else n + ".gguf")
            if f.is_file():
                return f
    name, _, tag = model.partition(":")
    parts = name.split("/")
    if not name or len(parts) > 3 or any(x in ("", ".", "..") for x in parts) or tag in (".", "..") or "/" in tag:
        return None
    for root in ollama_dirs():
        host = ["registry.ollama.ai", "library"] if len(parts) == 1 else (
            ["registry.ollama.ai"] if len(parts) == 2 else [])
        man = root / "manifests" / Path(*host, *parts) / (tag or "latest")
        try:
            doc = json.loads(man.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for layer in doc.get("layers") or () if isinstance(doc, dict) else ():
            if not isinstance(layer, dict) or layer.get("mediaType") != OLLAMA_MODEL_MEDIA:
                continue
            digest = str(layer.get("digest", ""))
            if _DIGEST.fullmatch(digest):
                blob = root / "blobs" / digest.replace(":", "-")
                if blob.is_file():
                    return blob
    return None


def offloadable(models: set, given: dict[str | None, int]) -> dict:
    """{model: (offloadable layers, where the count came from)} for the models whose count is
    known (the key None stands for rows without a model)."""
    out = {}
    for m in models:
        if m in given:
            out[m] = (given[m], "given")
        elif None in given:
            out[m] = (given[None], "given")
        elif isinstance(m, str):
            path = find_gguf(m)
            if path is None:
                continue
            try:
                info = gguf.read_gguf_info(path)
            except (OSError, gguf.GGUFError):  # an unreadable GGUF only means the count stays unknown
                continue
            if info.n_layers:
                out[m] = (info.n_layers + 1, f"GGUF {path.name}")
    return out


def effective(requested, layers: int) -> float | None:
    """Layers offloaded for a request of `requested` (a number as text, "all", -1) on a model of
    `layers` offloadable layers; None when the request is not a layer count."""
    s = str(requested).strip().lower()
    if s in ("all", "-1", "max"):
        return float(layers)
    try:
        x = float(s)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    return float(layers) if x < 0 else float(min(x, layers))
