"""Architecture specs for performance twins made without a model file: Gemma 3 270M, 1B, 4B, 12B
and 27B (text models), their GGUF metadata and tensor list as llama.cpp's converter writes them,
and the per-tensor types of llama.cpp's Q4_K_M recipe.

Hyper-parameters are those of the published Hugging Face configs (config.json of
google/gemma-3-{270m,1b}-it, text_config of google/gemma-3-{4b,12b,27b}-it; values a config leaves
out are transformers' Gemma3TextConfig defaults: head_dim 256, rms_norm_eps 1e-6, rope_theta 1e6,
rope_local_base_freq 1e4, query_pre_attn_scalar 256, max_position_embeddings 131072, sliding
window pattern 6). The GGUF keys and their order follow convert_hf_to_gguf.py's Gemma3Model
(set_gguf_parameters; token_embd keeps the tokenizer's 262144 rows although the 4B+ configs say
vocab_size 262208) and the real gemma-3-270m Q4_K_M file. llama.cpp itself hard-codes what the
converter does not write: the sliding-window pattern (every 6th layer global), the local rope base
(10000, unscaled), and the attention scale (27B: 1/sqrt(n_embd/n_head) = 1/sqrt(168)).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .gguf import GGUFValue

# GGUF value type ids (gguf.md) and the ggml type ids the recipe uses (ggml.h).
UINT32, FLOAT32, STRING = 4, 6, 8
F32, F16, Q4_0, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 14
QK_K = 256
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
GGML_BLOCK = {F32: 1, F16: 1, Q4_0: 32, Q5_0: 32, Q5_1: 32, Q8_0: 32, Q2_K: QK_K, Q3_K: QK_K,
              Q4_K: QK_K, Q5_K: QK_K, Q6_K: QK_K}


@dataclass(frozen=True)
class Gemma3Spec:
    """A Gemma 3 text model's shape. Units: counts of elements, tokens or layers."""

    name: str  # the harness's model name (conf/model/<name>.yaml)
    display_name: str  # general.name of the original
    size_label: str
    n_embd: int  # hidden_size
    n_layer: int  # num_hidden_layers
    n_head: int  # num_attention_heads
    n_head_kv: int  # num_key_value_heads
    head_dim: int
    n_ff: int  # intermediate_size
    n_ctx_train: int  # max_position_embeddings
    sliding_window: int
    sliding_window_pattern: int = 6  # every 6th layer attends globally (llama.cpp: load_swa_pattern(ml, 6))
    rope_theta: float = 1_000_000.0  # global layers
    rope_theta_local: float = 10_000.0  # sliding layers (llama.cpp's default rope_freq_base_train_swa)
    rope_scaling_linear: float | None = None  # factor on global layers (4B, 12B, 27B: 8)
    query_pre_attn_scalar: int = 256
    rms_eps: float = 1e-6
    n_vocab: int = 262_144
    source: str = ""  # where the numbers come from

    def digest(self) -> str:
        """sha256 of the spec's numbers (not of its source note): names the twin's source."""
        d = asdict(self)
        d.pop("source")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


_HF = "https://huggingface.co/google/gemma-3-{}-it/blob/main/config.json"
SPECS = {s.name: s for s in (
    Gemma3Spec("gemma3_270m", "Gemma 3 270m", "270M", n_embd=640, n_layer=18, n_head=4, n_head_kv=1,
               head_dim=256, n_ff=2048, n_ctx_train=32_768, sliding_window=512, source=_HF.format("270m")),
    Gemma3Spec("gemma3_1b", "Gemma 3 1b", "1B", n_embd=1152, n_layer=26, n_head=4, n_head_kv=1,
               head_dim=256, n_ff=6912, n_ctx_train=32_768, sliding_window=512, source=_HF.format("1b")),
    Gemma3Spec("gemma3_4b", "Gemma 3 4b", "4B", n_embd=2560, n_layer=34, n_head=8, n_head_kv=4,
               head_dim=256, n_ff=10_240, n_ctx_train=131_072, sliding_window=1024, rope_scaling_linear=8.0,
               source=_HF.format("4b") + " (text_config)"),
    Gemma3Spec("gemma3_12b", "Gemma 3 12b", "12B", n_embd=3840, n_layer=48, n_head=16, n_head_kv=8,
               head_dim=256, n_ff=15_360, n_ctx_train=131_072, sliding_window=1024, rope_scaling_linear=8.0,
               source=_HF.format("12b") + " (text_config)"),
    Gemma3Spec("gemma3_27b", "Gemma 3 27b", "27B", n_embd=5376, n_layer=62, n_head=32, n_head_kv=16,
               head_dim=128, n_ff=21_504, n_ctx_train=131_072, sliding_window=1024, rope_scaling_linear=8.0,
               query_pre_attn_scalar=168, source=_HF.format("27b") + " (text_config)"),
)}


def spec_kv(spec: Gemma3Spec, tokenizer: dict[str, GGUFValue]) -> dict[str, GGUFValue]:
    """The GGUF metadata of `spec` in the converter's order, with the tokenizer's `tokenizer.*`
    pairs (from a Gemma 3 GGUF) where the converter puts them."""
    a = "gemma3"
    kv = {
        "general.architecture": GGUFValue(STRING, a),
        "general.type": GGUFValue(STRING, "model"),
        "general.name": GGUFValue(STRING, spec.display_name),
        "general.basename": GGUFValue(STRING, "gemma-3"),
        "general.size_label": GGUFValue(STRING, spec.size_label),
        "general.license": GGUFValue(STRING, "gemma"),
        f"{a}.context_length": GGUFValue(UINT32, spec.n_ctx_train),
        f"{a}.embedding_length": GGUFValue(UINT32, spec.n_embd),
        f"{a}.block_count": GGUFValue(UINT32, spec.n_layer),
        f"{a}.feed_forward_length": GGUFValue(UINT32, spec.n_ff),
        f"{a}.attention.head_count": GGUFValue(UINT32, spec.n_head),
        f"{a}.attention.layer_norm_rms_epsilon": GGUFValue(FLOAT32, spec.rms_eps),
        f"{a}.attention.key_length": GGUFValue(UINT32, spec.head_dim),
        f"{a}.attention.value_length": GGUFValue(UINT32, spec.head_dim),
        f"{a}.rope.freq_base": GGUFValue(FLOAT32, spec.rope_theta),
        f"{a}.attention.sliding_window": GGUFValue(UINT32, spec.sliding_window),
        f"{a}.attention.head_count_kv": GGUFValue(UINT32, spec.n_head_kv),
    }
    if spec.rope_scaling_linear is not None:
        kv[f"{a}.rope.scaling.type"] = GGUFValue(STRING, "linear")
        kv[f"{a}.rope.scaling.factor"] = GGUFValue(FLOAT32, spec.rope_scaling_linear)
    kv.update((k, v) for k, v in tokenizer.items() if k.startswith("tokenizer."))
    kv["general.quantization_version"] = GGUFValue(UINT32, 2)
    kv["general.file_type"] = GGUFValue(UINT32, LLAMA_FTYPE_MOSTLY_Q4_K_M)
    return kv


def spec_tensors(spec: Gemma3Spec) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape in ggml's ne order) of every tensor llama.cpp's gemma3 loader asks for, in the
    order of the real files: output_norm, token_embd (tied: there is no output.weight), then the
    blocks in layer order, each block's tensors sorted by name."""
    e, hd = spec.n_embd, spec.head_dim
    block = {
        "attn_k.weight": (e, hd * spec.n_head_kv),
        "attn_k_norm.weight": (hd,),
        "attn_norm.weight": (e,),
        "attn_output.weight": (hd * spec.n_head, e),
        "attn_q.weight": (e, hd * spec.n_head),
        "attn_q_norm.weight": (hd,),
        "attn_v.weight": (e, hd * spec.n_head_kv),
        "ffn_down.weight": (spec.n_ff, e),
        "ffn_gate.weight": (e, spec.n_ff),
        "ffn_norm.weight": (e,),
        "ffn_up.weight": (e, spec.n_ff),
        "post_attention_norm.weight": (e,),
        "post_ffw_norm.weight": (e,),
    }
    out = [("output_norm.weight", (e,)), ("token_embd.weight", (e, spec.n_vocab))]
    for i in range(spec.n_layer):
        out += [(f"blk.{i}.{n}", shape) for n, shape in sorted(block.items())]
    return out


# --- llama.cpp's Q4_K_M recipe (src/llama-quant.cpp: tensor_allows_quantization,
# llama_tensor_get_type_impl, tensor_type_fallback), for the tensors of dense models. ---

_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                  "ssm_conv1d", "attn_rel_b.weight", "position_embd", "token_types.weight")


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama-quantize quantizes this tensor at all (2-D+ weights that are not norms, ...)."""
    return len(shape) >= 2 and name.endswith("weight") and not any(s in name for s in _NOT_QUANTIZED)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers that get more bits for attn_v and ffn_down: the first and last eighth, and every
    third layer between (llama-quant.cpp's use_more_bits; C integer division)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


_FALLBACK = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0, Q2_K: Q4_0, Q3_K: Q4_0}


def fallback(ncols: int, ggml_type: int) -> int:
    """A row length the type's block does not divide takes the 32-block fallback, else F16."""
    if ncols % GGML_BLOCK[ggml_type] == 0:
        return ggml_type
    t = _FALLBACK.get(ggml_type, ggml_type)
    return t if ncols % GGML_BLOCK[t] == 0 else F16


def q4_k_m_types(tensors: list[tuple[str, tuple[int, ...]]], n_layer: int,
                 unquantized: int = F32) -> list[int]:
    """The ggml type llama-quantize Q4_K_M gives each (name, shape), in the order given (attn_v
    tensors are counted in that order, as llama.cpp does). Tensors it does not quantize keep
    `unquantized` (F32: the converter's type for norms). Dense, non-Falcon models only: no expert
    tensors, no imatrix, no overrides."""
    n_attention_wv = sum(1 for n, _ in tensors if _is_attn_v(n))
    tied = not any(n == "output.weight" for n, _ in tensors)
    i_attention_wv, i_ffn_down = 0, 0
    out = []
    for name, shape in tensors:
        if not allows_quantization(name, shape):
            out.append(unquantized)
            continue
        t = Q4_K
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = Q8_0 if shape[0] % QK_K else Q6_K  # the output matrix (or the tied embedding)
        elif name == "token_embd.weight":
            pass  # Q4_K_M keeps the default for an untied embedding
        elif _is_attn_v(name):  # (a fused attn_qkv lands here too: its own Q5_K rule is never reached)
            if use_more_bits(i_attention_wv, n_attention_wv):
                t = Q6_K
            i_attention_wv += 1
        elif "ffn_down" in name:
            if use_more_bits(i_ffn_down, n_layer):
                t = Q6_K
            i_ffn_down += 1
        out.append(fallback(shape[0], t))
    return out


def _is_attn_v(name: str) -> bool:
    # llama-quant.cpp's category_is_attn_v: attn_v, the fused attn_qkv and attn_kv_b count alike
    return any(s in name for s in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"))
