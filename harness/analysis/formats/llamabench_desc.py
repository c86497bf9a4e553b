"""How llama-bench names a model and a build, for what we write in its formats.

- `model_desc`: llama.cpp's `llama_model_desc()` ("gemma3 270M Q4_K - Medium"): the architecture,
  the size class llama.cpp assigns from the layer count (`llm_type`, per architecture in
  src/models/*.cpp), and the file type's name (`llama_ftype_name()`, src/llama-model-loader.cpp).
  The tables are those of the llama.cpp that llama-cpp-python 0.3.36 vendors; a layer count the
  table does not know is "?B", as llama.cpp prints for an unknown size class.
- `build_commit`: the llama.cpp commit llama-cpp-python vendors (its CHANGELOG names it for every
  release), or, for a version this table does not know, a stable short hash of the engine build
  ("llama-cpp-python 0.3.99 gpu"), never a sentence: compare-llama-bench.py cuts every
  build_commit to the length of the shortest one.
"""

from __future__ import annotations

import hashlib
import re

#: llama_ftype -> llama_ftype_name() (llama.h's LLAMA_FTYPE_*; 1024 = LLAMA_FTYPE_GUESSED).
FTYPE_NAMES = {
    0: "all F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K - Medium",
    11: "Q3_K - Small", 12: "Q3_K - Medium", 13: "Q3_K - Large", 14: "Q4_K - Small", 15: "Q4_K - Medium",
    16: "Q5_K - Small", 17: "Q5_K - Medium", 18: "Q6_K", 19: "IQ2_XXS - 2.0625 bpw", 20: "IQ2_XS - 2.3125 bpw",
    21: "Q2_K - Small", 22: "IQ3_XS - 3.3 bpw", 23: "IQ3_XXS - 3.0625 bpw", 24: "IQ1_S - 1.5625 bpw",
    25: "IQ4_NL - 4.5 bpw", 26: "IQ3_S - 3.4375 bpw", 27: "IQ3_S mix - 3.66 bpw", 28: "IQ2_S - 2.5 bpw",
    29: "IQ2_M - 2.7 bpw", 30: "IQ4_XS - 4.25 bpw", 31: "IQ1_M - 1.75 bpw", 32: "BF16",
    36: "TQ1_0 - 1.69 bpw ternary", 37: "TQ2_0 - 2.06 bpw ternary", 38: "MXFP4 MoE", 39: "NVFP4",
    40: "Q1_0", 41: "Q2_0",
}
FTYPE_GUESSED = 1024

#: architecture -> {n_layer: size class} (llama.cpp's load_arch_hparams of each; dense models).
SIZE_CLASSES = {
    "gemma3": {18: "270M", 26: "1B", 32: "8B", 34: "4B", 48: "12B", 62: "27B"},
    "llama": {16: "1B", 22: "1B", 26: "3B", 28: "3B", 30: "256M", 36: "8B", 40: "13B", 48: "34B",
              60: "30B"},
    "gemma2": {26: "2B", 42: "9B", 46: "27B"},
    "gemma": {18: "2B", 28: "7B"},
}

#: llama-cpp-python version -> the llama.cpp commit it vendors (the newest "update llama.cpp to
#: ggml-org/llama.cpp@..." of that release in llama-cpp-python's CHANGELOG.md).
LLAMA_CPP_COMMITS = {
    "0.3.36": "0c1e57098", "0.3.35": "4df29be4f", "0.3.34": "e3546c794", "0.3.33": "78d2f5246",
    "0.3.32": "b3fed31b9", "0.3.31": "f449e0553", "0.3.30": "e3a74b299", "0.3.29": "f05cf4676",
    "0.3.28": "9e3b928fd", "0.3.27": "465b1f0e7", "0.3.26": "7c158fbb4", "0.3.25": "210a6570c",
}
#: Hex digits of a build_commit we make up (as many as llama-cpp-python's CHANGELOG gives).
COMMIT_CHARS = 9

_ENGINE = re.compile(r"llama-cpp-python (\S+)(?: (cpu|gpu))?(?: .*)?")
_LLAMA_CPP = re.compile(r"llama\.cpp ([0-9a-fA-F]{6,40}|unknown)(?: \((\d+)\))?(?: (.+))?")


def ftype_name(file_type) -> str | None:
    """llama_ftype_name() of a GGUF general.file_type, None when unknown or missing."""
    if file_type is None:
        return None
    ft = int(file_type)
    name = FTYPE_NAMES.get(ft & ~FTYPE_GUESSED, "unknown, may not work")
    return f"(guessed) {name}" if ft & FTYPE_GUESSED else name


def model_desc(architecture, n_layers, file_type) -> str | None:
    """llama_model_desc() of a model from its GGUF header: "gemma3 270M Q4_K - Medium". None when
    the architecture or the file type is unknown."""
    ft = ftype_name(file_type)
    if not architecture or ft is None:
        return None
    size = SIZE_CLASSES.get(str(architecture), {}).get(int(n_layers) if n_layers is not None else -1, "?B")
    return f"{architecture} {size} {ft}"


def engine_build(engine) -> str | None:
    """The build part of our engine string: "llama-cpp-python 0.3.36 cpu" of
    "llama-cpp-python 0.3.36 cpu python" (the last word is the timing path, not the build)."""
    m = _ENGINE.fullmatch(str(engine)) if engine is not None else None
    if m is None:
        return None
    return " ".join(x for x in ("llama-cpp-python", m.group(1), m.group(2)) if x)


def timing_path(engine) -> str | None:
    """The timing path our engine string ends with (python | native), None for other engines."""
    words = str(engine).split() if engine is not None else []
    return words[-1] if engine_build(engine) and words[-1] in ("python", "native") else None


def build_commit(engine) -> tuple[str, int, str | None]:
    """(build_commit, build_number, backends) for an engine string: llama-bench's own
    ("llama.cpp 8f3a2c1 (6123) CUDA") split back; ours the vendored llama.cpp commit, or a
    COMMIT_CHARS-digit hash of the engine build; any other text a hash of it, so that
    build_commit is always a short hex string."""
    if engine is None:
        return "unknown", 0, None
    m = _LLAMA_CPP.fullmatch(str(engine))
    if m:
        return m.group(1), int(m.group(2) or 0), m.group(3)
    build = engine_build(engine)
    if build is not None:
        version = build.split()[1]
        commit = LLAMA_CPP_COMMITS.get(version)
        if commit is not None:
            return commit, 0, None
    return hashlib.sha256((build or str(engine)).encode()).hexdigest()[:COMMIT_CHARS], 0, None
