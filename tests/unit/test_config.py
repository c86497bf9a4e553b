"""Tests for harness.config.validate: the validation table, normalisation and purity."""

from __future__ import annotations

import builtins
import copy
import functools
import math
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config import ConfigError, RunConfig, parse_n_gpu_layers, validate

CONF = Path(__file__).resolve().parents[2] / "conf"


def _load(rel: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / rel), resolve=True)


@functools.cache
def _base() -> dict:
    root = OmegaConf.load(CONF / "config.yaml")  # sweep_name is a ${now:} interpolation: not resolved
    return {
        "model": _load("model/gemma3_270m.yaml"),
        "runtime": _load("runtime/default.yaml"),
        "sampling": _load("sampling/default.yaml"),
        "workload": _load("workload/short_chat.yaml"),
        "bench": _load("bench/default.yaml"),
        "results_dir": root.results_dir,
        "sweep_name": "unit-test",
    }


def base() -> dict:
    """A composed config shaped like Hydra's, built from the real YAML files of conf/ (read once)."""
    return copy.deepcopy(_base())


def with_value(path: str, value) -> dict:
    cfg = base()
    *parents, last = path.split(".")
    sec = cfg
    for p in parents:
        sec = sec[p]
    sec[last] = value
    return cfg


# --- the base config itself ------------------------------------------------------------------------

def test_base_config_is_valid_and_typed():
    rc = validate(base())
    assert isinstance(rc, RunConfig)
    assert rc.model.name == "gemma3_270m"
    assert rc.model.files == ("gemma-3-270m-q4_k_m.gguf",)
    assert rc.runtime.n_gpu_layers == "all"
    assert rc.runtime.n_ctx == 2048
    assert rc.runtime.flash_attn == "auto"
    assert rc.sampling.temperature == 0.8
    assert rc.workload.name == "short_chat"
    assert rc.bench.repetitions == 5
    assert rc.sweep_name == "unit-test"


def test_base_reads_the_real_yaml_tree():
    # The helper must track conf/: every key it produces is one the YAML files define.
    cfg = base()
    assert set(cfg["runtime"]) == set(OmegaConf.load(CONF / "runtime/default.yaml"))
    assert set(cfg["workload"]) == set(OmegaConf.load(CONF / "workload/short_chat.yaml"))


def test_to_dict_from_dict_round_trip():
    rc = validate(base())
    again = RunConfig.from_dict(rc.to_dict())
    assert again == rc


# --- bad values: ConfigError, one line, naming key, value (repr) and what is allowed ---------------

BAD = [
    # (key path, bad value, fragment of the "allowed" text)
    ("runtime.n_ctx", -5, "positive integer"),
    ("runtime.n_ctx", 0, "positive integer"),
    ("runtime.n_ctx", "abc", "positive integer"),
    ("runtime.n_ctx", 1.5, "positive integer"),
    ("runtime.n_ctx", True, "positive integer"),
    ("runtime.n_ctx", None, "positive integer"),
    ("runtime.n_batch", 0, "positive integer"),
    ("runtime.n_threads", 0, "positive integer"),
    ("runtime.n_threads", -1, "positive integer"),
    ("sampling.temperature", -0.1, ">= 0"),
    ("sampling.temperature", "hot", "number"),
    ("sampling.temperature", float("nan"), "number"),
    ("sampling.temperature", True, "number"),
    ("sampling.top_p", 0, "(0, 1]"),
    ("sampling.top_p", 1.5, "(0, 1]"),
    ("sampling.top_p", -1, "(0, 1]"),
    ("sampling.top_k", -1, "non-negative integer"),
    ("sampling.top_k", 2.5, "non-negative integer"),
    ("sampling.min_p", 1.5, "[0, 1]"),
    ("sampling.repeat_penalty", 0, "> 0"),
    ("sampling.seed", -1, "non-negative integer"),
    ("bench.repetitions", 0, "positive integer"),
    ("bench.warmup", -1, "must be 'auto' or an integer >= 0"),
    ("bench.warmup", "soon", "must be 'auto' or an integer >= 0"),
    ("bench.rounds", 0, "must be 'auto' or an integer >= 1"),
    ("bench.order_seed", -3, "non-negative integer"),
    ("bench.control", "yes", "must be true or false"),
    ("bench.timing", "fast", "auto|python|native"),
    ("bench.ignore_eos", "yes", "true or false"),
    ("runtime.flash_attn", "maybe", "on|off|auto"),
    ("runtime.n_gpu_layers", "abc", "'all', -1"),
    ("runtime.n_gpu_layers", -2, "'all', -1"),
    ("runtime.n_gpu_layers", "150%", "percentage"),
    ("runtime.n_gpu_layers", "-5%", "percentage"),
    ("runtime.n_gpu_layers", "12.5", "percentage"),
    ("runtime.n_gpu_layers", 3.0, "percentage"),
    ("runtime.n_gpu_layers", True, "percentage"),
    ("runtime.n_gpu_layers", None, "percentage"),
    ("runtime.type_k", "q3", "q8_0"),
    ("runtime.type_v", "q4_k", "q8_0"),
    ("runtime.use_mmap", "on", "true or false"),
    ("runtime.foo", 1, "not a known key"),
    ("sampling.temp", 0.5, "not a known key"),
    ("sweep_name", "../x", "letters, digits"),
    ("sweep_name", "a/b", "letters, digits"),
    ("sweep_name", "", "letters, digits"),
    ("sweep_name", ".hidden", "letters, digits"),
    ("sweep_name", "a\nb", "letters, digits"),
    ("sweep_name", "x" * 101, "letters, digits"),
    ("sweep_name", 7, "letters, digits"),
    ("results_dir", "  ", "directory"),
    ("workload.max_tokens", 0, "positive integer"),
    ("workload.kind", "poem", "text|random_tokens|fill_to_length"),
    ("workload.prompt", "   ", "non-empty"),
    ("workload.prompt_tokens", 0, "positive integer"),
    ("model.source", "http", "package|file"),
    ("model.path", "", "file path"),
]


def _ids(case):
    key, value, _ = case
    return f"{key}={value!r}"[:60]


@pytest.mark.parametrize("key,value,allowed", BAD, ids=[_ids(c) for c in BAD])
def test_bad_value_raises_one_line_config_error(key, value, allowed):
    with pytest.raises(ConfigError) as ei:
        validate(with_value(key, value))
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{key}: "), msg
    assert repr(value) in msg, msg
    assert allowed in msg, msg
    # Float-typed settings report the value after float() (top_p=0 -> "got 0.0"): same number.
    shown = {repr(value)} | ({repr(float(value))} if type(value) is int else set())
    assert any(msg.endswith(f", got {s}") for s in shown), msg
    assert ei.value.key == key
    assert ei.value.value == value or (isinstance(value, float) and math.isnan(value))


def test_error_message_example_from_the_style_guide():
    with pytest.raises(ConfigError) as ei:
        validate(with_value("runtime.n_ctx", -5))
    assert str(ei.value) == "runtime.n_ctx: must be a positive integer, got -5"


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate(with_value("runtime.n_ctx", 0))


def test_n_ubatch_must_not_exceed_n_batch():
    cfg = base()
    cfg["runtime"]["n_batch"] = 256
    cfg["runtime"]["n_ubatch"] = 512
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith("runtime.n_ubatch: ")
    assert "runtime.n_batch (256)" in msg
    assert msg.endswith("got 512")


def test_n_ubatch_equal_to_n_batch_is_fine():
    cfg = base()
    cfg["runtime"]["n_batch"] = cfg["runtime"]["n_ubatch"] = 256
    assert validate(cfg).runtime.n_ubatch == 256


def test_unknown_key_message_lists_known_keys():
    with pytest.raises(ConfigError) as ei:
        validate(with_value("runtime.foo", 1))
    msg = str(ei.value)
    assert "runtime.foo" in msg
    for known in ("n_ctx", "n_gpu_layers", "flash_attn"):
        assert known in msg


@pytest.mark.parametrize("group", ["model", "runtime", "sampling", "workload", "bench"])
def test_missing_or_non_mapping_group(group):
    cfg = base()
    cfg[group] = "oops"
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    assert str(ei.value).startswith(f"{group}: ")
    cfg.pop(group)
    with pytest.raises(ConfigError):
        validate(cfg)


@pytest.mark.parametrize("kind", ["random_tokens", "fill_to_length"])
def test_prompt_tokens_required_for_synthetic_workloads(kind):
    cfg = with_value("workload.kind", kind)
    cfg["workload"]["prompt_tokens"] = None
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    assert str(ei.value).startswith("workload.prompt_tokens: ")
    cfg["workload"]["prompt_tokens"] = 128
    assert validate(cfg).workload.prompt_tokens == 128


def test_file_model_needs_a_path_or_files():
    cfg = base()
    cfg["model"].update(source="file", path=None, files=[])
    with pytest.raises(ConfigError) as ei:
        validate(cfg)
    assert str(ei.value).startswith("model.path: ")


# Non-finite numbers cannot be stored: store.write_json uses allow_nan=False, which rejects inf as
# well as NaN, so a run would otherwise fail only when run.json is written, after the measurement.
@pytest.mark.parametrize("key", ["sampling.temperature", "sampling.top_p", "sampling.min_p",
                                 "sampling.repeat_penalty"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_numbers_are_rejected(key, value):
    with pytest.raises(ConfigError) as ei:
        validate(with_value(key, value))
    assert str(ei.value).startswith(f"{key}: ")
    assert repr(value) in str(ei.value)


# --- valid variants: accepted and normalised -------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("all", "all"), ("ALL", "all"), (" All ", "all"), ("max", "all"),
    (-1, -1), ("-1", -1), (0, 0), (12, 12), ("12", 12), (" 12 ", 12), (999, 999),
    ("50%", "50%"), (" 50 % ", "50%"), ("50.0%", "50%"), ("12.5%", "12.5%"),
    ("0%", "0%"), ("100%", "100%"),
])
def test_n_gpu_layers_normalised(value, expected):
    rc = validate(with_value("runtime.n_gpu_layers", value))
    assert rc.runtime.n_gpu_layers == expected
    assert type(rc.runtime.n_gpu_layers) is type(expected)
    assert parse_n_gpu_layers(value) == expected


@pytest.mark.parametrize("value,expected", [
    (True, "on"), (False, "off"), ("on", "on"), ("off", "off"), ("auto", "auto"),
])
def test_flash_attn_yaml_booleans(value, expected):
    assert validate(with_value("runtime.flash_attn", value)).runtime.flash_attn == expected


def test_flash_attn_bare_on_from_yaml_is_true_and_accepted():
    # YAML 1.1 (and so OmegaConf) reads a bare `on` as True.
    node = OmegaConf.create("flash_attn: on")
    assert node.flash_attn is True
    assert validate(with_value("runtime.flash_attn", node.flash_attn)).runtime.flash_attn == "on"


@pytest.mark.parametrize("key,value,expected", [
    ("sampling.temperature", 0, 0.0),
    ("sampling.temperature", 0.0, 0.0),
    ("sampling.temperature", 2, 2.0),
    ("sampling.top_p", 1.0, 1.0),
    ("sampling.top_p", 1, 1.0),
    ("sampling.top_p", 0.01, 0.01),
    ("sampling.top_k", 0, 0),
    ("sampling.min_p", 0, 0.0),
    ("sampling.min_p", 1, 1.0),
    ("bench.warmup", 0, 0),
    ("bench.repetitions", 1, 1),
    ("runtime.n_threads", 4, 4),
    ("runtime.n_threads", None, None),
    ("runtime.n_ctx", 1, 1),
    ("runtime.type_k", "q8_0", "q8_0"),
    ("runtime.type_v", "bf16", "bf16"),
    ("sweep_name", "a", "a"),
    ("sweep_name", "2024-01-01_run.v2", "2024-01-01_run.v2"),
    ("sweep_name", "x" * 100, "x" * 100),
])
def test_valid_values_accepted(key, value, expected):
    rc = validate(with_value(key, value))
    section, _, name = key.rpartition(".")
    got = getattr(getattr(rc, section), name) if section else getattr(rc, name)
    assert got == expected
    assert type(got) is type(expected)


def test_temperature_int_becomes_float():
    assert isinstance(validate(with_value("sampling.temperature", 0)).sampling.temperature, float)


def test_model_files_single_string_becomes_tuple():
    assert validate(with_value("model.files", "a.gguf")).model.files == ("a.gguf",)


def test_missing_optional_keys_take_defaults():
    cfg = base()
    for k in ("n_threads", "n_threads_batch", "type_v", "use_mmap"):
        cfg["runtime"].pop(k)
    rc = validate(cfg)
    assert rc.runtime.n_threads is None and rc.runtime.type_v == "f16" and rc.runtime.use_mmap is True


# --- purity -----------------------------------------------------------------------------------------

def test_validate_is_pure(monkeypatch):
    cfg = base()
    bad = with_value("runtime.n_ctx", -5)
    snapshot = copy.deepcopy(cfg)
    expected = validate(copy.deepcopy(cfg))

    def boom(*a, **k):
        raise AssertionError("validate touched the file system")

    monkeypatch.setattr(builtins, "open", boom)
    monkeypatch.setattr(os, "stat", boom)
    monkeypatch.setattr(os, "lstat", boom)
    monkeypatch.setattr(os, "listdir", boom)
    monkeypatch.setattr(os, "scandir", boom)
    rc = validate(cfg)
    with pytest.raises(ConfigError):
        validate(bad)
    monkeypatch.undo()
    assert rc == expected
    assert cfg == snapshot  # the input is not modified


@pytest.mark.parametrize("report, ok", [
    ({"auto": True, "narrative": "none"}, True),
    ({"auto": False, "narrative": "llm"}, True),
    ({"auto": True}, True),
    ({"auto": True, "narrative": "poem"}, False),
    ({"auto": True, "narrative": True}, False),
    ({"auto": True, "style": "long"}, False),
])
def test_report_section(report, ok):
    cfg = base() | {"report": report}
    if ok:
        validate(cfg)
    else:
        with pytest.raises(ConfigError) as e:
            validate(cfg)
        assert str(e.value).startswith("report")
        assert "\n" not in str(e.value)


def test_compositions_shared_composes_once_and_hands_out_copies():
    from hydra import initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode

    from harness import hydra_conf

    hydra_conf.register_resolvers()
    original = ConfigLoaderImpl.load_configuration
    calls = []
    impl = ConfigLoaderImpl._load_configuration_impl

    def counted(self, *a, **k):
        calls.append(k.get("overrides"))
        return impl(self, *a, **k)

    ConfigLoaderImpl._load_configuration_impl = counted
    try:
        with initialize_config_dir(config_dir=hydra_conf.conf_dir(), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            with hydra_conf.compositions_shared():
                a = loader.load_configuration("config", ["runtime.n_ctx=512"], RunMode.RUN)
                a.runtime.n_ctx = 1  # a caller's change stays with that caller
                b = loader.load_configuration("config", ["runtime.n_ctx=512"], RunMode.RUN)
                c = loader.load_configuration("config", ["runtime.n_ctx=256"], RunMode.RUN)
                for _ in range(2):  # a failure is not kept: each caller gets the error
                    with pytest.raises(ConfigCompositionException):
                        loader.load_configuration("config", ["runtime.no_such_key=1"], RunMode.RUN)
            assert ConfigLoaderImpl.load_configuration is original
            d = loader.load_configuration("config", ["runtime.n_ctx=512"], RunMode.RUN)
    finally:
        ConfigLoaderImpl._load_configuration_impl = impl
    assert b.runtime.n_ctx == 512 and c.runtime.n_ctx == 256 and d.runtime.n_ctx == 512 and b is not a
    assert calls == [["runtime.n_ctx=512"], ["runtime.n_ctx=256"], ["runtime.no_such_key=1"],
                                   ["runtime.no_such_key=1"], ["runtime.n_ctx=512"]]
