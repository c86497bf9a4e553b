"""llama-bench output (llama.cpp `tools/llama-bench`): read its json / jsonl / csv / sql printers
into tidy sample rows, and write a tidy frame back in those formats so llama.cpp's
`scripts/compare-llama-bench.py` can read our runs.

One llama-bench *test* is one configuration with `samples_ns` (one per repetition). Mapping:
- pp test (n_prompt > 0, n_gen == 0): prefill samples, prefill_tps = samples_ts,
  prompt_eval_ms = samples_ns / 1e6.
- tg test (n_gen > 0, n_prompt == 0): decode samples, decode_tps = samples_ts,
  decode_ms = samples_ns / 1e6. llama-bench's tgN times N single-token decode steps; in our glossary
  that is the decode phase of N + 1 generated tokens (decode_tps = (n_gen_tokens - 1) / decode_s),
  so n_gen_tokens = n_gen + 1, and the writer emits n_gen = n_gen_tokens - 1.
- pp+tg test (both > 0): e2e samples, e2e_ms = samples_ns / 1e6 (n_gen_tokens = n_gen + 1 as above).
- no samples arrays (llama-bench's csv and sql printers never write them): one row from avg_ns/avg_ts.

Only llama-bench's json/jsonl printers write `samples_ns` / `samples_ts`. Our writer adds them to
csv and sql too (space-separated numbers, as trailing columns), and a last `harness` field with the
run's own tidy rows (`formats.embedded`), which the reader prefers to the llama-bench fields, so an
export read back loses nothing; compare-llama-bench.py ignores fields it does not know. How
build_commit, model_type and n_depth are written for our runs: `llamabench_write`.

The SQL printer writes `CREATE TABLE IF NOT EXISTS llama_bench (...)` and one
`INSERT INTO llama_bench (...) VALUES ('...', ...);` per test (older builds named the table `test`;
both are read). SQL is never trusted: see `llamabench_sql.records`.

The jobs live in sibling modules, and their public names are importable from here:
`llamabench_spec` (the field list both directions share), `llamabench_read` (sniff, rows),
`llamabench_sql` (the locked-down SQL loader), `llamabench_write` (dump, tests), `llamabench_desc`
(llama_model_desc() names and build commits).
"""

from __future__ import annotations

from .llamabench_read import rows, sniff
from .llamabench_spec import FIELD_TYPES, FIELDS, FORMATS, REQUIRED, SQL_TABLE, SQL_TABLES_READ
from .llamabench_sql import MAX_SQL_CHARS, SQL_STEPS_BASE, SQL_STEPS_PER_CHAR
from .llamabench_write import dump, tests

__all__ = ["FIELDS", "FIELD_TYPES", "FORMATS", "MAX_SQL_CHARS", "REQUIRED", "SQL_STEPS_BASE", "SQL_STEPS_PER_CHAR",
           "SQL_TABLE", "SQL_TABLES_READ", "dump", "rows", "sniff", "tests"]
