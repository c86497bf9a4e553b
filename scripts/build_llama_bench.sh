#!/usr/bin/env bash
# Build llama.cpp's `llama-bench` from the very source the INSTALLED llama-cpp-python vendors, so
# that benchmarks/test_vs_llama_bench.py compares the harness against the same engine code.
#
#   bash scripts/build_llama_bench.sh           build once (minutes), then print the binary's path
#   bash scripts/build_llama_bench.sh --check   print the path; exit 0 if built, 1 if not (no build)
#
#   HARNESS_CUDA=0|1    force the CPU or CUDA build (default: detect a GPU with nvidia-smi -L,
#                       exactly as scripts/setup.sh decides)
#   HARNESS_CACHE=DIR   cache root (default ~/.cache/harness); the sdist is shared with setup.sh
#   CMAKE_ARGS=...      extra cmake arguments, passed on like scripts/setup.sh passes them to the
#                       llama-cpp-python build (not part of the cache key, as in setup.sh)
#
# Idempotent: once built for this (version, variant, cpu) it prints the path and exits at once.
# The last line printed is always the absolute path of the llama-bench binary; on error, one line
# on stderr and a non-zero exit.
#
# Compile settings, chosen to match how llama-cpp-python 0.3.x builds its libraries (its
# CMakeLists.txt + scikit-build-core, as driven by scripts/setup.sh), so the comparison is fair:
#   - CMAKE_BUILD_TYPE=Release: scikit-build-core's default build type (-O3 -DNDEBUG).
#   - GGML_NATIVE=ON: llama-cpp-python leaves ggml's default, which is ON (-march=native) unless
#     cross-compiling or SOURCE_DATE_EPOCH is set; we pass it explicitly and unset
#     SOURCE_DATE_EPOCH. Installed wheel reports "AVX2 = 1 | FMA = 1 | ... | OPENMP = 1".
#   - GGML_OPENMP: left at ggml's default (ON), as llama-cpp-python does (its libggml-cpu links
#     libgomp), so both sides use the same OpenMP thread pool.
#   - BUILD_SHARED_LIBS=ON: llama-cpp-python forces shared libraries (-fPIC code); llama-bench
#     links the same kind of libllama/libggml*.so, found through the build tree's RPATH.
#   - LLAMA_CURL=OFF (llama-cpp-python forces it off too); tests/examples/server off: only
#     the llama-bench target is built.
#   - GGML_CUDA=on for the CUDA variant, exactly as setup.sh adds it, plus $CMAKE_ARGS.
set -euo pipefail

die() { printf 'build_llama_bench: %s\n' "$*" >&2; exit 1; }
log() { printf 'build_llama_bench: %s\n' "$*" >&2; }

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (expected nothing, --check or --help)" ;;
esac

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYBIN="$ROOT/.venv/bin/python"
CACHE="${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness}"
case "$CACHE" in /*) ;; *) CACHE="$ROOT/$CACHE" ;; esac

[[ -x "$PYBIN" ]] || die "no virtualenv at $ROOT/.venv; run 'make setup' (scripts/setup.sh) first"
# The installed version, from the dist-info folder's name (no interpreter start: the fast path
# stays in milliseconds); importlib.metadata when that is ambiguous.
shopt -s nullglob
dist=( "$ROOT"/.venv/lib/python*/site-packages/llama_cpp_python-*.dist-info )
shopt -u nullglob
if (( ${#dist[@]} == 1 )); then
    version=${dist[0]##*/llama_cpp_python-}
    version=${version%.dist-info}
else
    version=$("$PYBIN" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null) \
        || die "llama-cpp-python is not installed in .venv; run 'make setup' (scripts/setup.sh) first"
fi
[[ "$version" =~ ^[0-9A-Za-z.+_-]+$ ]] || die "cannot make sense of the installed llama-cpp-python version '$version'"

# --- variant and CPU key: the same rules (and key) as scripts/setup.sh -------------------------------
source scripts/variant.sh  # (cwd is the checkout root here)

dir="$CACHE/llama-bench-${version}-${variant}-${cpu_key}"
bin="$dir/build/bin/llama-bench"
stamp="$dir/.built"

# --- fast path -------------------------------------------------------------------------------------
if [[ -f "$stamp" && -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
if (( check_only )); then
    echo "$bin"
    exit 1
fi

command -v cmake >/dev/null 2>&1 || die "cmake not found on PATH"
command -v tar >/dev/null 2>&1 || die "tar not found on PATH"
mkdir -p "$dir" || die "cannot create $dir"

# One build at a time per directory; a second caller waits, then takes the fast path.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.lock"
    flock 9
    if [[ -f "$stamp" && -x "$bin" ]]; then
        echo "$bin"
        exit 0
    fi
fi

start=$(date +%s)

# --- the sdist (shared with scripts/setup.sh) -------------------------------------------------------
sdist_dir="$CACHE/sdist"
sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
    log "downloading the llama-cpp-python $version sdist"
    mkdir -p "$sdist_dir"
    tmp=$(mktemp -d "$sdist_dir/.tmp-XXXXXX")
    if ! "$PYBIN" -m pip --disable-pip-version-check -q download --no-binary :all: --no-deps \
            "llama-cpp-python==$version" -d "$tmp" >&2; then
        rm -rf "$tmp"
        die "pip download of llama-cpp-python==$version failed"
    fi
    mv "$tmp"/llama_cpp_python-*.tar.gz "$sdist" 2>/dev/null || { rm -rf "$tmp"; die "pip download produced no sdist"; }
    rm -rf "$tmp"
fi

# --- extract vendor/llama.cpp only -----------------------------------------------------------------
src="$dir/src"
if [[ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]]; then
    log "extracting vendor/llama.cpp from $(basename "$sdist")"
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$sdist" -C "$src" --strip-components=1 "llama_cpp_python-$version/vendor/llama.cpp" \
        || { rm -rf "$src"; die "cannot extract vendor/llama.cpp from $sdist"; }
    [[ -f "$src/vendor/llama.cpp/CMakeLists.txt" ]] || { rm -rf "$src"; die "$sdist has no vendor/llama.cpp"; }
fi

# --- configure and build ---------------------------------------------------------------------------
cmake_args=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    -DLLAMA_CURL=OFF
    -DGGML_NATIVE=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=OFF
)
if [[ "$variant" == cuda ]]; then
    cmake_args+=(-DGGML_CUDA=on)
fi
# shellcheck disable=SC2206  # CMAKE_ARGS is a word list, as pip/scikit-build reads it
extra=( ${CMAKE_ARGS:-} )
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}"

unset SOURCE_DATE_EPOCH   # it would turn GGML_NATIVE's default off; keep the build tuned like the wheel's
log "building llama-bench for llama-cpp-python $version ($variant, $jobs jobs) in $dir; this takes a few minutes once"
buildlog="$dir/build.log"
if ! ( cd "$src" && cmake -S vendor/llama.cpp -B "$dir/build" "${cmake_args[@]}" "${extra[@]}" ) >"$buildlog" 2>&1; then
    die "cmake configure failed; see $buildlog"
fi
if ! cmake --build "$dir/build" --target llama-bench -j"$jobs" >>"$buildlog" 2>&1; then
    die "cmake build of llama-bench failed; see $buildlog"
fi
[[ -x "$bin" ]] || die "build finished but $bin is missing; see $buildlog"
"$bin" --help >/dev/null 2>&1 || die "$bin does not run; see $buildlog"

printf 'version=%s\nvariant=%s\ncpu_key=%s\ncmake_args=%s %s\nseconds=%s\n' \
    "$version" "$variant" "$cpu_key" "${cmake_args[*]}" "${extra[*]:-}" "$(( $(date +%s) - start ))" > "$stamp"
log "built in $(( $(date +%s) - start ))s"
echo "$bin"
