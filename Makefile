# The README's two commands: `make run` (a real sweep on the default model) and `make test`.
# Both run `setup` first, which is idempotent and returns at once when nothing changed.
VENV      := .venv
HARNESS   := $(VENV)/bin/harness
PYTEST    := $(VENV)/bin/pytest
SWEEP     ?= quick
ARGS      ?=

.PHONY: setup run test test-unit bench doctor clean distclean

setup:
	@bash scripts/setup.sh

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

doctor: setup
	$(HARNESS) doctor

clean:
	rm -rf build dist *.egg-info .pytest_cache

distclean: clean
	rm -rf $(VENV)
