"""Fast reader for GGUF file metadata (header, key/value pairs, tensor infos).

Tensor data is never read: the file is memory-mapped and only the pages holding
the header, metadata and tensor infos are touched. Arrays are skipped rather than
decoded (the 262k-entry tokenizer vocabulary would otherwise dominate the cost),
so parsing a real model takes milliseconds. read_gguf_header is the opt-in full read: every
value decoded (the vocabulary included) and nothing required past the tensor infos, so a file cut
short after its header (the first megabytes of a big model) reads. Standard library only.

Format reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import errno
import math
import mmap
import os
import stat
import struct
from dataclasses import asdict, dataclass, replace

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 used uint32 counts and is long obsolete
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COUNTS = struct.Struct("<QQ")  # n_tensors, n_kv (after magic and version)
_ARRAY_HEADER = struct.Struct("<IQ")  # element type, element count
_TENSOR_TAIL = struct.Struct("<IQ")  # ggml type, data offset
_DIMS = [struct.Struct(f"<{n}Q") for n in range(GGML_MAX_DIMS + 1)]

# GGUF value type id -> (name, struct format) for the fixed-size scalar types.
_SCALARS = {
    0: ("UINT8", "B"), 1: ("INT8", "b"), 2: ("UINT16", "H"), 3: ("INT16", "h"),
    4: ("UINT32", "I"), 5: ("INT32", "i"), 6: ("FLOAT32", "f"), 7: ("BOOL", "?"),
    10: ("UINT64", "Q"), 11: ("INT64", "q"), 12: ("FLOAT64", "d"),
}
_SCALAR_STRUCTS = {t: struct.Struct("<" + fmt) for t, (_, fmt) in _SCALARS.items()}
_STRING, _ARRAY = 8, 9
_TYPE_NAMES = {**{t: name for t, (name, _) in _SCALARS.items()}, _STRING: "STRING", _ARRAY: "ARRAY"}
_ARRAY_ELEM_TYPES = {name: t for t, name in _TYPE_NAMES.items()}
# Smallest possible encodings, used to reject counts no file of this size could hold
# before looping over them: kv = key length (8) + type (4) + 1-byte value;
# tensor info = name length (8) + n_dims (4) + type (4) + offset (8).
_MIN_KV_BYTES, _MIN_TENSOR_INFO_BYTES = 13, 24

# ggml type id -> (block size in elements, bytes per block), from ggml's type traits.
GGML_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
    18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}

# llama.cpp's llama_ftype enum (general.file_type) -> the usual quantization name.
LLAMA_FTYPE_NAMES = {
    0: "ALL_F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}


class GGUFError(ValueError):
    """The file is not a readable GGUF file. str(err) is one line naming the path."""


@dataclass(frozen=True)
class GGUFInfo:
    """Summary of a GGUF file's header and metadata (no tensor data)."""

    path: str
    size_bytes: int
    version: int
    architecture: str  # "" if general.architecture is missing or not a string
    name: str | None
    n_layers: int | None
    n_ctx_train: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    file_type: int | None
    quantization: str | None
    n_tensors: int
    n_kv: int
    n_vocab: int | None
    tensor_data_bytes: int  # tensors of unknown ggml type are not counted
    metadata: dict  # scalars as values; arrays as {"type": elem type name, "len": N}

    def to_dict(self) -> dict:
        """Return every field as a JSON-friendly dict (metadata is copied)."""
        return asdict(self)


@dataclass(frozen=True)
class GGUFValue:
    """One metadata value as stored. `type` is the GGUF value type id (gguf.md); an array has
    `elem_type` and a tuple of items. Strings are str, except inside arrays, where they stay bytes
    (token texts are not always valid UTF-8, and a copy must keep them as they are)."""

    type: int
    value: object
    elem_type: int | None = None


@dataclass(frozen=True)
class GGUFTensorInfo:
    """A tensor as the header describes it: `shape` is ggml's ne order (row length first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # of its data, from the start of the data section


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before a GGUF file's tensor data (read_gguf_header)."""

    path: str
    version: int
    kv: dict[str, GGUFValue]  # in file order
    tensors: tuple[GGUFTensorInfo, ...]  # in file order
    header_bytes: int  # end of the tensor infos: the bytes [0, header_bytes) are the header
    alignment: int


class _Reader:
    """Cursor over the mapped file; every read is bounds-checked."""

    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, what: str):
        raise GGUFError(f"{self.path}: {what}")

    def unpack(self, st: struct.Struct) -> tuple:
        if self.pos + st.size > self.size:
            self.fail(f"truncated: need {st.size} bytes at offset {self.pos}, file has {self.size}")
        vals = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return vals

    def string(self) -> str:
        (n,) = self.unpack(_U64)
        # Check before slicing so a corrupt length can never trigger a huge allocation.
        if self.pos + n > self.size:
            kind = "truncated" if n <= self.size else "corrupt or truncated: absurd"
            self.fail(f"{kind} string length {n} at offset {self.pos - 8}, file has {self.size} bytes")
        s = self.buf[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int, key: str, want_values: bool):
        """Read one value; arrays become (summary, decoded numbers or None)."""
        st = _SCALAR_STRUCTS.get(vtype)
        if st is not None:
            return self.unpack(st)[0], None
        if vtype == _STRING:
            return self.string(), None
        if vtype == _ARRAY:
            return self.array(key, want_values)
        self.fail(f"unknown metadata value type {vtype} for key {key!r} at offset {self.pos - 4}")

    def array(self, key: str, want_values: bool):
        etype, count = self.unpack(_ARRAY_HEADER)
        st = _SCALAR_STRUCTS.get(etype)
        # Minimum bytes the elements need; lets us reject absurd counts up front.
        min_item = st.size if st is not None else 8 if etype == _STRING else None
        if min_item is None:
            # ggml itself rejects nested arrays, so there is no need to support them.
            self.fail(f"unsupported array element type {etype} for key {key!r}")
        if count * min_item > self.size - self.pos:
            self.fail(f"truncated or corrupt: array {key!r} claims {count} elements at offset "
                      f"{self.pos}, file has {self.size} bytes")
        values = None
        if st is not None:
            if want_values:
                values = struct.unpack_from(f"<{count}{_SCALARS[etype][1]}", self.buf, self.pos)
            self.pos += count * st.size  # fixed-size elements: skip in one step
        elif want_values:
            values = self.strings(count, key)
        else:
            self.skip_strings(count, key)
        return {"type": _TYPE_NAMES[etype], "len": count}, values

    def strings(self, count: int, key: str) -> tuple[bytes, ...]:
        unpack, buf, pos, size, out = _U64.unpack_from, self.buf, self.pos, self.size, []
        for _ in range(count):
            if pos + 8 > size or pos + 8 + unpack(buf, pos)[0] > size:
                self.fail(f"truncated: string array {key!r} runs past the end of the file ({size} bytes)")
            n = unpack(buf, pos)[0]
            out.append(bytes(buf[pos + 8:pos + 8 + n]))
            pos += 8 + n
        self.pos = pos
        return tuple(out)

    def skip_strings(self, count: int, key: str):
        # Hot loop for the vocabulary: only the length prefixes are read, with
        # locals bound for speed; bounds are checked once after the loop (an
        # out-of-range offset makes unpack_from raise, which we map to "truncated").
        unpack, buf, pos = _U64.unpack_from, self.buf, self.pos
        try:
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
        except (struct.error, OverflowError):
            pos = self.size + 1
        if pos > self.size:
            self.fail(f"truncated: string array {key!r} runs past the end of the file ({self.size} bytes)")
        self.pos = pos


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class NotARegularFile(GGUFError):
    """The path is a FIFO, socket or device: opening or reading it could block forever."""

    def __init__(self, path: str, kind: str):
        self.path, self.kind = path, kind
        super().__init__(f"{path}: not a regular file ({kind})")


def file_kind(mode: int) -> str:
    """What a stat mode describes, in words: "regular file", "directory", "FIFO", ..."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def check_regular_file(st: os.stat_result, path: str) -> None:
    """Raise IsADirectoryError for a directory and NotARegularFile for anything else that is
    not a regular file (after symlinks)."""
    if stat.S_ISDIR(st.st_mode):  # open() would say PermissionError on Windows
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFile(path, file_kind(st.st_mode))


def read_gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """Read the header, metadata and tensor infos of the GGUF file at `path`.

    Raises FileNotFoundError / IsADirectoryError (with errno and filename) when the
    path is missing or a directory, NotARegularFile for a FIFO, socket or device (checked
    before the open, which for a FIFO would block), and GGUFError for anything that makes the file
    unreadable as GGUF v2/v3: bad magic, unsupported version, truncation, absurd
    counts or lengths, unknown value types. A tensor of unknown ggml type is
    tolerated: its size is left out of tensor_data_bytes and of the check that the
    tensor data fits in the file.
    """
    spath = os.fsdecode(path)
    st = os.stat(spath)
    check_regular_file(st, spath)
    # A sweep plans every point from the same file: the header (with its 262k-token vocabulary
    # to walk) is parsed once per file version, and each caller gets its own metadata dict.
    key = (spath, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    info = _INFO_CACHE.get(key)
    if info is None:
        info = _read(spath, _parse)
        if len(_INFO_CACHE) >= 64:
            _INFO_CACHE.clear()
        _INFO_CACHE[key] = info
    return replace(info, metadata={k: dict(v) if isinstance(v, dict) else v for k, v in info.metadata.items()})


_INFO_CACHE: dict[tuple, GGUFInfo] = {}  # (path, device, inode, size, mtime) -> what read_gguf_info read


def read_gguf_header(path: str | os.PathLike) -> GGUFHeader:
    """Read everything before the tensor data of the GGUF file at `path`, every value decoded
    (arrays included: the tokenizer's 262k tokens take about 0.2 s). The tensor data is neither
    read nor required: a file cut short after its tensor infos reads like the whole file.
    Raises as read_gguf_info does, except that missing tensor data is no error."""
    return _read(path, _parse_header)


def _read(path: str | os.PathLike, parse):
    spath = os.fsdecode(path)
    check_regular_file(os.stat(spath), spath)
    # Non-blocking: a FIFO put in the file's place after the check must not hang the open.
    fd = os.open(spath, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        check_regular_file(st, spath)
        size = st.st_size
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{spath}: not a GGUF file (magic {magic!r})")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return parse(_Reader(buf, size, spath))


@dataclass
class _Walk:
    """What one pass over the header found; `decoded` holds the values of the arrays asked for."""

    version: int
    n_kv: int
    metadata: dict
    types: dict  # key -> (value type, array element type or None)
    decoded: dict
    tensors: list  # (name, dims, ggml type, offset)
    alignment: int


def _walk(r: _Reader, want) -> _Walk:
    """Read header, key/value pairs and tensor infos; `want(key)` says which arrays to decode."""
    r.pos = 4
    (version,) = r.unpack(_U32)
    if version not in SUPPORTED_VERSIONS:
        hint = " (big-endian file?)" if struct.unpack("<I", struct.pack(">I", version))[0] in (2, 3) else ""
        r.fail(f"unsupported GGUF version {version}{hint}; supported: 2, 3")
    n_tensors, n_kv = r.unpack(_COUNTS)
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > r.size - r.pos:
        r.fail(f"truncated or corrupt: header claims {n_kv} metadata entries and {n_tensors} "
               f"tensors, more than {r.size} bytes can hold")

    metadata, types, decoded = {}, {}, {}
    for _ in range(n_kv):
        key = r.string()
        (vtype,) = r.unpack(_U32)
        val, values = r.value(vtype, key, want(key))
        metadata[key] = val
        types[key] = (vtype, _ARRAY_ELEM_TYPES.get(val["type"]) if vtype == _ARRAY else None)
        if values is not None:
            decoded[key] = values

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if _int(alignment) is None or alignment <= 0 or alignment & (alignment - 1):
        r.fail(f"invalid general.alignment {alignment!r} (must be a power of two)")

    tensors = []
    for _ in range(n_tensors):
        tname = r.string()
        (n_dims,) = r.unpack(_U32)
        if n_dims > GGML_MAX_DIMS:
            r.fail(f"tensor {tname!r} has {n_dims} dimensions (max {GGML_MAX_DIMS})")
        dims = r.unpack(_DIMS[n_dims])
        ggml_type, offset = r.unpack(_TENSOR_TAIL)
        tensors.append((tname, dims, ggml_type, offset))
    return _Walk(version, n_kv, metadata, types, decoded, tensors, alignment)


def _parse_header(r: _Reader) -> GGUFHeader:
    w = _walk(r, lambda key: True)
    kv = {}
    for key, value in w.metadata.items():
        vtype, elem_type = w.types[key]
        kv[key] = GGUFValue(vtype, w.decoded[key] if vtype == _ARRAY else value, elem_type)
    return GGUFHeader(path=r.path, version=w.version, kv=kv,
                      tensors=tuple(GGUFTensorInfo(n, d, t, o) for n, d, t, o in w.tensors),
                      header_bytes=r.pos, alignment=w.alignment)


def _parse(r: _Reader) -> GGUFInfo:
    w = _walk(r, lambda key: key.endswith((".attention.head_count", ".attention.head_count_kv")))
    version, metadata, decoded, alignment = w.version, w.metadata, w.decoded, w.alignment
    n_tensors, n_kv = len(w.tensors), w.n_kv
    data_bytes, data_end, all_known = 0, 0, True
    for _, dims, ggml_type, offset in w.tensors:
        if ggml_type not in GGML_TYPE_SIZES:
            all_known = False  # size unknowable; keep going rather than reject the file
            continue
        block, type_size = GGML_TYPE_SIZES[ggml_type]
        nbytes = math.prod(dims) * type_size // block
        data_bytes += nbytes
        data_end = max(data_end, offset + nbytes)

    data_start = -(-r.pos // alignment) * alignment  # round up to the alignment
    if n_tensors and data_start + data_end > r.size:
        # Known tensors are still checked when another tensor's type is unknown.
        r.fail(f"truncated: tensor data needs {data_start + data_end} bytes, file has {r.size}"
               + ("" if all_known else " (tensors of unknown type not counted)"))

    arch = metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""

    def arch_int(suffix: str) -> int | None:
        key = f"{arch}.{suffix}"
        if key in decoded:  # per-layer arrays (e.g. head counts): report the max
            return max(decoded[key], default=None)
        return _int(metadata.get(key))

    name = metadata.get("general.name")
    file_type = _int(metadata.get("general.file_type"))
    tokens = metadata.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=r.path, size_bytes=r.size, version=version, architecture=arch,
        name=name if isinstance(name, str) else None,
        n_layers=arch_int("block_count"), n_ctx_train=arch_int("context_length"),
        n_embd=arch_int("embedding_length"), n_head=arch_int("attention.head_count"),
        n_head_kv=arch_int("attention.head_count_kv"), file_type=file_type,
        quantization=LLAMA_FTYPE_NAMES.get(file_type) if file_type is not None else None,
        n_tensors=n_tensors, n_kv=n_kv,
        n_vocab=tokens["len"] if isinstance(tokens, dict) else None,
        tensor_data_bytes=data_bytes, metadata=metadata,
    )
