"""A model as one GGUF file (llama.cpp, Ollama, KoboldCpp): the inverse of `weights/gguf.py`.

Tensors get their GGUF names from the same name table the importer reads
(`weights.gguf.gguf_name`), the llama q/k rows are permuted back into
llama.cpp's interleaved-RoPE order (`permute_qk`, the inverse of the
importer's `unpermute_qk`), and the tokenizer is written as `tokenizer.ggml.*`
metadata that `tokenizer_from_gguf` (and transformers' GGUF loader) rebuild.

Only the llama architecture is written: Llama and Mistral checkpoints both
run as it in llama.cpp. Other families are refused in one line.

The header (metadata and every tensor's shape and type) is written first,
from shapes alone; each tensor is then fetched from the devices, converted
and appended before the next one is fetched, so host memory holds about one
tensor.

    write_gguf(model, bundle, "model.f16.gguf", dtype="float16")
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape, quantize
from tqdm import tqdm

from ditto_jax.config import ModelConfig
from ditto_jax.model import CausalLM
from ditto_jax.tokenizer import TokenizerBundle, gguf_vocab
from ditto_jax.weights.gguf import ARCHITECTURES, gguf_name, permute_qk, permuted_heads
from ditto_jax.weights.hf import cast_weights
from ditto_jax.weights.table import hf_entries
from ditto_native import DittoError

# The families llama.cpp runs as its "llama" architecture.
LLAMA_ARCH_FAMILIES = ("llama", "mistral")

# --dtype -> (type of the matrices, the file type llama.cpp reports). Vectors (norms) stay
# float32 in every case, as llama.cpp's converter keeps them.
GGUF_DTYPES = {
    "float32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "float16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bfloat16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}
_Q8_BLOCK = 32  # Q8_0 quantizes rows in blocks of 32; a row of another length falls back to float16


def check_gguf_config(cfg: ModelConfig) -> None:
    """Refuse, in one line, a model the llama GGUF architecture cannot express."""
    if cfg.model_type not in LLAMA_ARCH_FAMILIES:
        raise DittoError(
            f"GGUF export writes the llama architecture ({', '.join(LLAMA_ARCH_FAMILIES)}); a {cfg.model_type} model cannot be written as GGUF"
        )
    if cfg.rope_scaling:
        # llama.cpp stores Llama 3.1 scaling as a rope_freqs tensor, which the GGUF importer refuses.
        raise DittoError(f"GGUF export: rope_scaling {dict(cfg.rope_scaling).get('rope_type')!r} cannot be written; export --format hf")


def tensor_type(dtype: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """The GGML type one tensor is stored in for `--dtype`."""
    if len(shape) < 2:
        return GGMLQuantizationType.F32
    qtype = GGUF_DTYPES[dtype][0]
    if qtype is GGMLQuantizationType.Q8_0 and shape[-1] % _Q8_BLOCK:
        return GGMLQuantizationType.F16
    return qtype


def write_gguf(model: CausalLM, bundle: TokenizerBundle, path: str | Path, *, dtype: str = "float32", name: str | None = None, progress: bool = False) -> Path:
    """Write `model` and its tokenizer as a llama-architecture GGUF file at `path`."""
    if dtype not in GGUF_DTYPES:
        raise DittoError(f"GGUF export dtype {dtype!r} is not supported; choose {', '.join(GGUF_DTYPES)}")
    cfg = model.cfg
    check_gguf_config(cfg)
    vocab = gguf_vocab(bundle, cfg.vocab_size)
    spec = ARCHITECTURES["llama"]
    path = Path(path)

    writer = GGUFWriter(path, "llama")
    writer.add_name(name or bundle.name)
    writer.add_file_type(GGUF_DTYPES[dtype][1])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    _add_tokenizer(writer, vocab)

    # Plan every tensor from its shape first: the header precedes the data.
    plan = []
    for key, entry in hf_entries(model).items():
        gname = gguf_name(key)
        if gname is None:  # the name table covers the weight table; this is a bug guard
            raise DittoError(f"GGUF export: no GGUF name for tensor {key}")
        qtype = tensor_type(dtype, entry.shape)
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            np_dtype = np.dtype(np.float32 if qtype is GGMLQuantizationType.F32 else np.float16)
            writer.add_tensor_info(gname, entry.shape, np_dtype, math.prod(entry.shape) * np_dtype.itemsize)
        else:
            byte_shape = quant_shape_to_byte_shape(entry.shape, qtype)
            writer.add_tensor_info(gname, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=qtype)
        plan.append((key, entry, qtype))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with tqdm(total=len(plan), desc="export", unit="tensor", disable=not progress, file=sys.stderr) as bar:
        for key, entry, qtype in plan:
            value = entry.load().astype(np.float32)
            heads = permuted_heads(key, cfg, spec)
            if heads:
                value = np.ascontiguousarray(permute_qk(value, heads))
            writer.write_tensor_data(_encode(value, qtype, key))
            bar.update(1)
    writer.close()
    return path


def _encode(value: np.ndarray, qtype: GGMLQuantizationType, key: str) -> np.ndarray:
    if qtype is GGMLQuantizationType.F16:
        return cast_weights(value, np.dtype(np.float16), key)
    if qtype is GGMLQuantizationType.F32:
        return np.ascontiguousarray(value)
    return quantize(np.ascontiguousarray(value), qtype)


def _add_tokenizer(writer: GGUFWriter, vocab) -> None:
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for value, add in (
        (vocab.bos_id, writer.add_bos_token_id),
        (vocab.eos_id, writer.add_eos_token_id),
        (vocab.pad_id, writer.add_pad_token_id),
        (vocab.eot_id, writer.add_eot_token_id),
    ):
        if value is not None:
            add(int(value))
    # Chat templates write any BOS themselves; adding one again would double it.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)
