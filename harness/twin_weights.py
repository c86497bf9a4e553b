"""Synthetic tensor data for performance twins: valid ggml blocks with random quants, seeded.

A dense llama.cpp kernel does the same work whatever the weights, as long as no value is NaN, inf
or denormal. So each quantised block gets random quant bytes and scale fields (the fp16 `d`, and
`dmin` / `m` where the type has one) set to normal fp16 values chosen so that the dequantised
weights of a tensor have mean about 0 and standard deviation about 1/sqrt(fan_in), fan_in being
the row length (ne[0]): activations then keep their scale from layer to layer. Sub-block scales
(K-quants) are drawn from a small range so that `d` stays a normal fp16 number even for the
widest rows of a 27B model. Norm weights (1-D) are about 1, as the converter stores Gemma's norms.

Block layouts are ggml's (ggml/src/ggml-common.h); each type's mean and spread per unit of `d` are
measured once on sample blocks with gguf-py's reference dequantisers, so no per-type formula is
written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import gguf  # gguf-py (llama.cpp's): ggml type names, reference dequantisers
import numpy as np

F32, F16, BF16 = 0, 1, 30
FP16_MIN_NORMAL = 2.0 ** -14
CHUNK_BYTES = 1 << 25  # 32 MiB of blocks generated and written at a time


def _small_k_scales(blocks: np.ndarray) -> None:
    # Q4_K / Q5_K: 12 bytes at offset 4 pack eight 6-bit scales and eight 6-bit mins; keeping
    # every scale and min below 8 zeroes the bits that carry their high parts.
    blocks[:, 4:12] &= 0x07
    blocks[:, 12:16] &= 0x77


def _q6_k_scales(blocks: np.ndarray) -> None:
    # Q6_K: sixteen int8 sub-block scales at offset 192; 1..4 instead of -128..127.
    blocks[:, 192:208] = (blocks[:, 192:208] & 0x03) + 1


def _q8_k_bsums(blocks: np.ndarray) -> None:
    # Q8_K: bsums (16 int16 at offset 260) must be the sums of the quants in groups of 16.
    qs = blocks[:, 4:260].view(np.int8).reshape(len(blocks), 16, 16)
    blocks[:, 260:292] = qs.sum(axis=2, dtype=np.int16).view(np.uint8)


@dataclass(frozen=True)
class BlockLayout:
    """Where a block type keeps its scale fields (byte offsets), and how its bytes are drawn."""

    name: str
    block_elems: int
    block_bytes: int
    d_offset: int
    m_offset: int | None = None  # the second scale: Q4_1/Q5_1's m, a K-quant's dmin
    d_f32: bool = False  # Q8_K keeps d as a float32
    fix: Callable[[np.ndarray], None] | None = None  # applied to the random bytes, in place


LAYOUTS = {
    2: BlockLayout("Q4_0", 32, 18, 0),
    3: BlockLayout("Q4_1", 32, 20, 0, m_offset=2),
    6: BlockLayout("Q5_0", 32, 22, 0),
    7: BlockLayout("Q5_1", 32, 24, 0, m_offset=2),
    8: BlockLayout("Q8_0", 32, 34, 0),
    10: BlockLayout("Q2_K", 256, 84, 80, m_offset=82),
    11: BlockLayout("Q3_K", 256, 110, 108),
    12: BlockLayout("Q4_K", 256, 144, 0, m_offset=2, fix=_small_k_scales),
    13: BlockLayout("Q5_K", 256, 176, 0, m_offset=2, fix=_small_k_scales),
    14: BlockLayout("Q6_K", 256, 210, 208, fix=_q6_k_scales),
    15: BlockLayout("Q8_K", 256, 292, 0, d_f32=True, fix=_q8_k_bsums),
    20: BlockLayout("IQ4_NL", 32, 18, 0),
}
FLOAT_TYPES = {F32: ("F32", 4), F16: ("F16", 2), BF16: ("BF16", 2)}
SUPPORTED = {**{t: n for t, (n, _) in FLOAT_TYPES.items()}, **{t: lay.name for t, lay in LAYOUTS.items()}}


class UnsupportedType(ValueError):
    """A ggml type this module cannot make synthetic data for."""


def type_name(ggml_type: int) -> str:
    try:
        return gguf.GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def tensor_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of ggml's ne `shape`; raises UnsupportedType for a type not in SUPPORTED
    and ValueError when the row length is not a whole number of blocks."""
    if ggml_type in FLOAT_TYPES:
        return math.prod(shape) * FLOAT_TYPES[ggml_type][1]
    lay = LAYOUTS.get(ggml_type)
    if lay is None:
        raise UnsupportedType(f"{type_name(ggml_type)} (supported: {', '.join(sorted(SUPPORTED.values()))})")
    if shape[0] % lay.block_elems:
        raise ValueError(f"row length {shape[0]} is not a multiple of {lay.name}'s block of {lay.block_elems}")
    return math.prod(shape) // lay.block_elems * lay.block_bytes


# Block scales of a real quantised model are spread: the log of a tensor's fp16 block scales has a
# standard deviation of 0.16-0.77 (median 0.2-0.38 per type) in Gemma 3 270M Q4_K_M, hundreds of
# distinct values per tensor. The spread matters for speed, not only for realism: on x86, ggml's
# CPU kernels turn each fp16 scale into a float through a 256 KiB table (ggml_table_f32_f16), so
# one scale per tensor keeps a single table line hot where real weights touch hundreds, and a twin
# with constant scales decoded 5-10% faster than its real model. SCALE_LOG_STD is that spread.
SCALE_LOG_STD = 0.3


def scale_factors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-block multipliers of the scales: log-normal with log-std SCALE_LOG_STD and a mean square
    of 1, so the weights keep the spread asked for; clipped to [1/8, 8] (no outlier leaves fp16's
    normal range)."""
    f = np.exp(rng.standard_normal(n) * SCALE_LOG_STD - SCALE_LOG_STD ** 2)
    return np.clip(f, 0.125, 8.0)


def _set_scales(blocks: np.ndarray, lay: BlockLayout, d: float, m: float,
                factors: np.ndarray | None = None) -> None:
    """Write the scale fields: `d` (and `m`) for every block, times `factors` per block if given.
    A nonzero product that would fall below fp16's smallest normal is raised to it."""
    n = len(blocks)
    f = np.ones(n) if factors is None else factors

    def field(v: float, dtype) -> np.ndarray:
        x = v * f
        x = np.where((x != 0) & (np.abs(x) < FP16_MIN_NORMAL), np.copysign(FP16_MIN_NORMAL, x), x)
        return x.astype(dtype).view(np.uint8).reshape(n, -1)

    if lay.d_f32:
        blocks[:, lay.d_offset:lay.d_offset + 4] = field(d, np.float32)
    else:
        blocks[:, lay.d_offset:lay.d_offset + 2] = field(d, np.float16)
    if lay.m_offset is not None:
        blocks[:, lay.m_offset:lay.m_offset + 2] = field(m, np.float16)


def _random_blocks(rng: np.random.Generator, n: int, lay: BlockLayout) -> np.ndarray:
    raw = rng.bit_generator.random_raw(-(-n * lay.block_bytes // 8)).view(np.uint8)
    blocks = raw[:n * lay.block_bytes].reshape(n, lay.block_bytes)
    if lay.fix is not None:
        lay.fix(blocks)
    return blocks


def dequantize(blocks: np.ndarray, ggml_type: int) -> np.ndarray:
    """Dequantised values of blocks (n, block_bytes) -> (n, block_elems), float32: gguf-py's
    reference dequantisers, and Q8_K's d * q (gguf-py has none for it)."""
    if ggml_type == 15:
        d = blocks[:, 0:4].copy().view(np.float32)
        return d * blocks[:, 4:260].view(np.int8).astype(np.float32)
    return gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(ggml_type)).reshape(len(blocks), -1)


@cache
def unit_scales(ggml_type: int) -> tuple[float, float]:
    """(m per unit d that centres the weights on 0, spread of the weights per unit d), measured on
    1024 sample blocks. Dequantised values are linear in (d, m): v = d * a + m * b."""
    lay = LAYOUTS[ggml_type]
    blocks = _random_blocks(np.random.default_rng(0), 1024, lay)
    _set_scales(blocks, lay, 1.0, 0.0)
    a = dequantize(blocks, ggml_type).astype(np.float64)
    if lay.m_offset is None:
        return 0.0, float(a.std())
    _set_scales(blocks, lay, 0.0, 1.0)
    b = dequantize(blocks, ggml_type).astype(np.float64)
    r = -a.mean() / b.mean()
    return float(r), float((a + r * b).std())


def block_scales(ggml_type: int, std: float) -> tuple[float, float]:
    """(d, m) giving weights of about `std` around 0, as normal fp16 numbers: a `d` that would be
    denormal is raised to the smallest normal (the spread is then a little larger than asked)."""
    r, unit = unit_scales(ggml_type)
    d = max(std / unit, FP16_MIN_NORMAL)
    if r and abs(r * d) < FP16_MIN_NORMAL:
        d = FP16_MIN_NORMAL / abs(r)
    return d, r * d


def weight_std(name: str, shape: tuple[int, ...]) -> float:
    """The spread a tensor's weights get: 1/sqrt(row length)."""
    return 1.0 / math.sqrt(shape[0])


def synth_chunks(name: str, shape: tuple[int, ...], ggml_type: int,
                 rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor's data, as consecutive uint8 arrays of at most CHUNK_BYTES (about)."""
    nbytes = tensor_nbytes(ggml_type, shape)
    if ggml_type in FLOAT_TYPES:
        yield from _float_chunks(name, shape, ggml_type, rng, nbytes)
        return
    lay = LAYOUTS[ggml_type]
    d, m = block_scales(ggml_type, weight_std(name, shape))
    n_blocks = nbytes // lay.block_bytes
    per = max(1, CHUNK_BYTES // lay.block_bytes)
    for start in range(0, n_blocks, per):
        blocks = _random_blocks(rng, min(per, n_blocks - start), lay)
        _set_scales(blocks, lay, d, m, scale_factors(rng, len(blocks)))
        yield blocks.reshape(-1)


def _float_chunks(name: str, shape: tuple[int, ...], ggml_type: int, rng: np.random.Generator,
                  nbytes: int) -> Iterator[np.ndarray]:
    n = math.prod(shape)
    esize = FLOAT_TYPES[ggml_type][1]
    norm_like = len(shape) == 1 and not name.endswith(".bias")  # norms (and rope factors): about 1
    std = 0.05 if norm_like else weight_std(name, shape)
    per = max(1, CHUNK_BYTES // esize)
    for start in range(0, n, per):
        x = rng.standard_normal(min(per, n - start), dtype=np.float32) * np.float32(std)
        if norm_like:
            x += np.float32(1.0)
        if ggml_type == F16:
            # keep clear of fp16's denormals: |x| at least its smallest normal
            x = np.where(np.abs(x) < FP16_MIN_NORMAL, np.copysign(np.float32(FP16_MIN_NORMAL), x), x)
            yield x.astype(np.float16).view(np.uint8)
        elif ggml_type == BF16:
            yield (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        else:
            yield x.view(np.uint8)
