# The README's two commands: `make run` (a real sweep on the default model) and `make test`.
# Both run `setup` first, which is idempotent and returns at once when nothing changed.
VENV      := .venv
HARNESS   := $(VENV)/bin/harness
PYTEST    := $(VENV)/bin/pytest
SWEEP     ?= quick
ARGS      ?=

.PHONY: setup native run test test-unit bench bench-llama gpu-kit doctor clean distclean

setup:
	@bash scripts/setup.sh

# The native timing library (native/), built against the llama.cpp that llama-cpp-python installed
# into the venv's site-packages. Configured once per site-packages; `cmake --build` then rebuilds
# only what changed (and reconfigures by itself when llama.h changes). setup runs it.
NATIVE_BUILD := native/build
native:
	@test -x $(VENV)/bin/python || { echo "native: no $(VENV); run make setup first" >&2; exit 1; }
	@sp=$$($(VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
	if ! grep -qsx "CMAKE_PREFIX_PATH:[A-Z]*=$$sp" $(NATIVE_BUILD)/CMakeCache.txt; then \
		cmake -S native -B $(NATIVE_BUILD) -DCMAKE_PREFIX_PATH="$$sp" -DCMAKE_BUILD_TYPE=Release >/dev/null || exit 1; \
	fi && cmake --build $(NATIVE_BUILD)

# The sweep writes its report at the end; the last line names it.
run: setup
	@$(HARNESS) run -m +sweep=$(SWEEP) $(ARGS); status=$$?; \
	latest=$$(ls -td results/*/report 2>/dev/null | head -n 1); \
	if [ -n "$$latest" ]; then echo "report: $$latest/report.html"; fi; exit $$status

test: setup
	$(PYTEST) tests $(ARGS)

test-unit: setup
	$(PYTEST) tests/unit $(ARGS)

bench: setup
	$(PYTEST) benchmarks $(ARGS)

# llama.cpp's llama-bench, built from the source the installed llama-cpp-python vendors (once).
bench-llama: setup
	@bash scripts/build_llama_bench.sh

# What travels to a bare GPU machine for scripts/gpu_check.sh: gpu-kit/ (trimmed llama.cpp source,
# wheels, the default model's GGUF header); prints its size. See the README's "GPU check in one call".
gpu-kit: setup
	@bash scripts/gpu_kit.sh

doctor: setup
	$(HARNESS) doctor

clean:
	rm -rf build dist *.egg-info .pytest_cache $(NATIVE_BUILD)

distclean: clean
	rm -rf $(VENV)
