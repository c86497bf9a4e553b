"""llama-bench's output fields, shared by the reader and the writer of its formats.

The field list is llama-bench's `test::get_fields()` (ggml-org/llama.cpp tools/llama-bench/
llama-bench.cpp) with its `get_field_type()`, in printed order, then the two arrays its json
printers append, then ours: `harness`, the run's own tidy rows (`formats.embedded`), which
llama.cpp's readers ignore and ours read back, so an export loses nothing. One list for every
reader and writer, so they cannot drift apart.
"""

from __future__ import annotations

# `use_mmap` was replaced by `load_mode` in current llama-bench but is still a key column of
# compare-llama-bench.py, so the writer keeps both.
SPEC: tuple[tuple[str, str], ...] = (
    ("build_commit", "str"), ("build_number", "int"), ("cpu_info", "str"), ("gpu_info", "str"),
    ("backends", "str"), ("model_filename", "str"), ("model_type", "str"), ("model_size", "int"),
    ("model_n_params", "int"), ("n_batch", "int"), ("n_ubatch", "int"), ("n_threads", "int"),
    ("cpu_mask", "str"), ("cpu_strict", "bool"), ("poll", "int"), ("type_k", "str"), ("type_v", "str"),
    ("n_gpu_layers", "int"), ("n_cpu_moe", "int"), ("split_mode", "str"), ("main_gpu", "int"),
    ("no_kv_offload", "bool"), ("flash_attn", "int"), ("devices", "str"), ("tensor_split", "str"),
    ("tensor_buft_overrides", "str"), ("load_mode", "str"), ("use_mmap", "bool"), ("embeddings", "bool"),
    ("no_op_offload", "int"), ("no_host", "bool"), ("fit_target", "int"), ("fit_min_ctx", "int"),
    ("n_prompt", "int"), ("n_gen", "int"), ("n_depth", "int"), ("test_time", "str"),
    ("avg_ns", "int"), ("stddev_ns", "int"), ("avg_ts", "float"), ("stddev_ts", "float"),
    ("samples_ns", "samples"), ("samples_ts", "samples"), ("harness", "json"),
)
FIELDS: tuple[str, ...] = tuple(name for name, _ in SPEC)
FIELD_TYPES: dict[str, str] = dict(SPEC)
REQUIRED = ("model_filename", "n_prompt", "n_gen", "avg_ts")  # what sniff() insists on
FORMATS = ("llama-bench-json", "llama-bench-jsonl", "llama-bench-csv", "llama-bench-sql")
SQL_TABLE = "llama_bench"  # what we write (current llama-bench, and what compare-llama-bench.py reads)
SQL_TABLES_READ = ("llama_bench", "test")  # `test`: llama-bench builds before the rename
SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL", "samples": "TEXT", "json": "TEXT"}

# Written for configuration the tidy table does not carry: llama-bench's own defaults.
DEFAULTS = {"cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "n_cpu_moe": 0, "split_mode": "layer",
            "main_gpu": 0, "no_kv_offload": False, "devices": "auto", "tensor_split": "0.00",
            "tensor_buft_overrides": "none", "load_mode": "mmap", "use_mmap": True, "embeddings": False,
            "no_op_offload": 0, "no_host": False, "fit_target": 0, "fit_min_ctx": 0, "n_depth": 0,
            "model_type": "", "model_size": 0, "model_n_params": 0, "build_number": 0}
