#!/usr/bin/env bash
# Prepare what travels to a bare GPU machine for scripts/gpu_check.sh (`make gpu-kit`), into the
# ignored folder gpu-kit/ (GPU_KIT_DIR overrides):
#
#   llama_cpp_python-<v>-trim.tar.gz  llama-cpp-python's sdist cut to what building libllama, ggml
#                                     (CPU and CUDA backends), llama.cpp's common library and
#                                     llama-bench needs, plus the bindings' Python package
#                                     (llama_cpp/*.py); llama.cpp's tools/ and vendor/ CMake lists
#                                     are cut to llama-bench and the libraries `common` links
#   wheels/cp312/                     the Python packages the GPU machine lacks (hydra-core,
#                                     omegaconf, antlr4-python3-runtime, jsonschema and its
#                                     dependencies, orjson, gguf, diskcache), at the versions this
#                                     checkout's .venv runs, as cp312 manylinux x86_64 wheels
#   wheels/cp<host>/                  the same for this machine's .venv (what --rehearse installs)
#   buildtools/                       setuptools and wheel, to install the harness there offline
#   models/<default model>.header.gguf  the default model's GGUF header (metadata, tokenizer and
#                                     tensor infos; no tensor data): its performance twin is made there
#   MANIFEST.txt                      every file with its size and sha256
#
# Idempotent: each part is remade only when its inputs changed. Prints the kit's size, and the
# whole carry (the working tree that travels plus the kit) against the 64 MiB a call may carry.
#
#   HARNESS_CACHE=DIR   cache root (default ~/.cache/harness); the sdist is shared with setup.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYBIN="$ROOT/.venv/bin/python"
KIT="${GPU_KIT_DIR:-$ROOT/gpu-kit}"
case "$KIT" in /*) ;; *) KIT="$ROOT/$KIT" ;; esac
CACHE="${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
TARGET_PY=312            # the GPU machine's Python (3.12)
CARRY_LIMIT=$((64 * 1024 * 1024))
SOURCE_LIMIT=$((20 * 1024 * 1024))
# What the GPU machine's image lacks of the harness's and llama-cpp-python's dependencies
# (its python3 has numpy, scipy, pandas, pyarrow, matplotlib, rich, psutil, nvidia-ml-py, pyyaml,
# jinja2, attrs, requests, tqdm, typing-extensions, markdown-it-py, pytest, pytest-benchmark).
PACKAGES=(hydra-core omegaconf antlr4-python3-runtime jsonschema jsonschema-specifications referencing
          rpds-py orjson gguf diskcache)
BUILDTOOLS=(setuptools wheel)

log() { printf 'gpu-kit: %s\n' "$*" >&2; }
die() { printf 'gpu-kit: error: %s\n' "$*" >&2; exit 1; }

[[ -x "$PYBIN" ]] || die "no .venv; run 'make setup' first"
PIP=("$PYBIN" -m pip --disable-pip-version-check -q)
mkdir -p "$KIT"

# The version of each package that this checkout's .venv runs (the tested combination).
pins() {
    "$PYBIN" - "$@" <<'PY'
import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        sys.exit(f"{name} is not installed in .venv; run 'make setup' first")
PY
}

# --- (a) the trimmed llama.cpp source ---------------------------------------------------------------
sdist="$CACHE/sdist/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz"
if [[ ! -f "$sdist" ]]; then
    log "downloading the llama-cpp-python $LLAMA_CPP_VERSION sdist"
    mkdir -p "$CACHE/sdist"
    tmpd=$(mktemp -d "$CACHE/sdist/.tmp-XXXXXX")
    "${PIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$tmpd"
    mv "$tmpd"/llama_cpp_python-*.tar.gz "$sdist"
    rm -rf "$tmpd"
fi

top="llama_cpp_python-$LLAMA_CPP_VERSION"
lc="$top/vendor/llama.cpp"
# What the build needs: folders (taken whole) and file patterns (a wildcard never crosses a '/').
KEEP=(
    "$top/CMakeLists.txt" "$top/LICENSE.md" "$top/pyproject.toml" "$top/llama_cpp/*.py" "$top/llama_cpp/py.typed"
    "$lc/CMakeLists.txt" "$lc/LICENSE" "$lc/licenses" "$lc/cmake" "$lc/include" "$lc/src" "$lc/common"
    "$lc/ggml/CMakeLists.txt" "$lc/ggml/cmake" "$lc/ggml/include" "$lc/ggml/src/CMakeLists.txt"
    "$lc/ggml/src/*.c" "$lc/ggml/src/*.cpp" "$lc/ggml/src/*.h" "$lc/ggml/src/*.in"
    "$lc/ggml/src/ggml-cpu" "$lc/ggml/src/ggml-cuda"
    "$lc/vendor/nlohmann" "$lc/vendor/sheredom" "$lc/vendor/cpp-httplib" "$lc/tools/llama-bench"
)
source_tar="$KIT/llama_cpp_python-$LLAMA_CPP_VERSION-trim.tar.gz"
source_key=$( (sha256sum "$sdist" | cut -c1-64; printf '%s\n' "${KEEP[@]}"; sed -n '/^# --- (a)/,/^# --- (b)/p' "$ROOT/scripts/gpu_kit.sh") \
              | sha256sum | cut -c1-16)
if [[ "$(cat "$source_tar.key" 2>/dev/null)" != "$source_key" || ! -f "$source_tar" ]]; then
    log "trimming $(basename "$sdist")"
    work=$(mktemp -d "$KIT/.tmp-src-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    tar -xzf "$sdist" -C "$work" --wildcards --no-wildcards-match-slash "${KEEP[@]}"
    # llama.cpp's tools/: only llama-bench (the others are not carried)
    cat > "$work/$lc/tools/CMakeLists.txt" <<'EOF'
# Cut to llama-bench for the GPU check kit (scripts/gpu_kit.sh); the other tools are not carried.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
EOF
    # llama.cpp's vendor/: only what the common library links (hash, miniaudio, stb serve libmtmd)
    cat > "$work/$lc/vendor/CMakeLists.txt" <<'EOF'
# Cut for the GPU check kit (scripts/gpu_kit.sh): what the common library links.
add_subdirectory(nlohmann)
add_subdirectory(sheredom)
if (LLAMA_BUILD_COMMON)
    add_subdirectory(cpp-httplib)
endif()
EOF
    # A reproducible archive (sorted names, fixed times and owners, no gzip timestamp), so the
    # same source gives the same bytes and the same build-cache key on every machine.
    tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$top" \
        | gzip -n -9 > "$source_tar.tmp"
    mv "$source_tar.tmp" "$source_tar"
    echo "$source_key" > "$source_tar.key"
    rm -rf "$work"
    trap - EXIT
fi
src_bytes=$(stat -c %s "$source_tar")
(( src_bytes <= SOURCE_LIMIT )) || die "the trimmed source is $src_bytes bytes, over $SOURCE_LIMIT"

# --- (b) wheels -------------------------------------------------------------------------------------
host_py=$("$PYBIN" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
mapfile -t pinned < <(pins "${PACKAGES[@]}")
mapfile -t pinned_tools < <(pins "${BUILDTOOLS[@]}")

# wheels for one CPython version: binary ones for manylinux x86_64, pure ones as they are;
# antlr4-python3-runtime 4.9.x is published as an sdist only, so it is built here (pure Python).
fetch_wheels() {
    local py=$1 dest=$2 tmpd key
    key=$(printf '%s\n' "$py" "${pinned[@]}" | sha256sum | cut -c1-16)
    [[ "$(cat "$dest/.key" 2>/dev/null)" == "$key" ]] && return 0
    log "downloading wheels for cp$py into $dest"
    tmpd=$(mktemp -d "$KIT/.tmp-wheels-XXXXXX")
    local binary=() sdist_only=()
    for req in "${pinned[@]}"; do
        case "$req" in antlr4-python3-runtime==*) sdist_only+=("$req") ;; *) binary+=("$req") ;; esac
    done
    "${PIP[@]}" download --no-deps --only-binary :all: --python-version "$py" --implementation cp \
        --abi "cp$py" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 -d "$tmpd" "${binary[@]}"
    if (( ${#sdist_only[@]} )); then
        "${PIP[@]}" wheel --no-deps -w "$tmpd" "${sdist_only[@]}"
    fi
    rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
    mv "$tmpd" "$dest"
    echo "$key" > "$dest/.key"
}
fetch_wheels "$TARGET_PY" "$KIT/wheels/cp$TARGET_PY"
[[ "$host_py" == "$TARGET_PY" ]] || fetch_wheels "$host_py" "$KIT/wheels/cp$host_py"

tools_key=$(printf '%s\n' "${pinned_tools[@]}" | sha256sum | cut -c1-16)
if [[ "$(cat "$KIT/buildtools/.key" 2>/dev/null)" != "$tools_key" ]]; then
    log "downloading ${BUILDTOOLS[*]}"
    tmpd=$(mktemp -d "$KIT/.tmp-tools-XXXXXX")
    "${PIP[@]}" download --no-deps --only-binary :all: -d "$tmpd" "${pinned_tools[@]}"
    rm -rf "$KIT/buildtools"; mv "$tmpd" "$KIT/buildtools"
    echo "$tools_key" > "$KIT/buildtools/.key"
fi

# --- (c) the default model's GGUF header -----------------------------------------------------------
mkdir -p "$KIT/models"
"$PYBIN" - "$KIT/models" <<'PY'
import hashlib, os, sys
from pathlib import Path

from harness.gguf import read_gguf_header
from harness.modelfile import default_model_path

model = default_model_path()
out = Path(sys.argv[1]) / (model.stem + ".header.gguf")
n = read_gguf_header(model).header_bytes
with open(model, "rb") as f:
    head = f.read(n)
if not out.is_file() or out.read_bytes() != head:
    tmp = out.with_name(".tmp-" + out.name)
    tmp.write_bytes(head)
    os.replace(tmp, out)
    print(f"gpu-kit: header of {model.name}: {n} bytes -> {out}", file=sys.stderr)
PY

# --- manifest and sizes -----------------------------------------------------------------------------
( cd "$KIT" && find . -type f ! -name MANIFEST.txt ! -name '.*' -printf '%P\n' | LC_ALL=C sort \
    | while read -r f; do printf '%s  %10d  %s\n' "$(sha256sum "$f" | cut -c1-16)" "$(stat -c %s "$f")" "$f"; done ) \
    > "$KIT/MANIFEST.txt"

sum_bytes() { awk '{s += $2} END {print s + 0}'; }
wheel_bytes=$(grep -E '  (wheels|buildtools)/' "$KIT/MANIFEST.txt" | sum_bytes)
header_bytes=$(grep -E '  models/' "$KIT/MANIFEST.txt" | sum_bytes)
kit_bytes=$(du -sb "$KIT" | cut -f1)
tree_bytes=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
carry=$((kit_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-kit: $KIT"
echo "  source  $(mib "$src_bytes")  $(basename "$source_tar")"
echo "  wheels  $(mib "$wheel_bytes")  (cp$TARGET_PY$([[ "$host_py" == "$TARGET_PY" ]] || echo ", cp$host_py for --rehearse"), buildtools)"
echo "  header  $(mib "$header_bytes")  models/"
echo "  kit     $(mib "$kit_bytes")"
echo "  carry   $(mib "$carry") with the working tree ($(mib "$tree_bytes")); a call carries at most 64 MiB"
(( carry <= CARRY_LIMIT )) || die "the carry ($carry bytes) is over 64 MiB"
