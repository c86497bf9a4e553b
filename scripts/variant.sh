# Shared by scripts/setup.sh and scripts/build_llama_bench.sh (sourced, not run): which llama.cpp
# build this machine gets, and the CPU key of the build caches.
#   variant: cuda when an NVIDIA GPU is present (detect the GPU, not the compiler), else cpu;
#            HARNESS_CUDA=0|1 overrides.
#   cpu_key: a CPU build is tuned to this processor (GGML_NATIVE), so cached builds name the CPU.
if [[ -n "${HARNESS_CUDA:-}" ]]; then
    case "$HARNESS_CUDA" in
        1) variant=cuda ;;
        0) variant=cpu ;;
        *) echo "HARNESS_CUDA: must be 0 or 1, got '$HARNESS_CUDA'" >&2; exit 2 ;;
    esac
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    variant=cuda
else
    variant=cpu
fi
cpu_key=$( (grep -m1 -E '^(model name|flags)' /proc/cpuinfo 2>/dev/null; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null; uname -m) | sha256sum | cut -c1-12)
