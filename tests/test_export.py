"""`ditto-jax export`: Hugging Face directories and GGUF files, checked round trip.

Oracles: transformers+torch loading the export (logits, chat template, greedy
tokens), and the project's own loaders reading it back (parameters). Sources:
tiny random models of each family, each with a small byte-level BPE tokenizer
trained here with the family's real chat template (so token ids fit its
vocabulary); SmolLM2, exported once per format per session; and a checkpoint
trained for 2 steps inside the session. Parameters sharded over 8 devices and
over 2 processes export the same bytes as unsharded ones.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file
from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from ditto_jax.cli import main
from ditto_jax.config import SUPPORTED_MODEL_TYPES
from ditto_jax.export import export_model, source_dtype
from ditto_jax.export.commands import parse_size
from ditto_jax.export.model_card import find_run, model_card, ModelCardInputs
from ditto_jax.generation import Engine, GenerationRequest
from ditto_jax.loader import load_model, resolve_model_ref
from ditto_jax.tokenizer import GGUF_PRE_SPLITS, end_of_turn_id, load_tokenizer
from ditto_jax.weights import table
from ditto_jax.weights.gguf import open_gguf
from ditto_jax.weights.hf import INDEX_FILE, export_hf
from ditto_jax.weights.table import LLAMA_FAMILY
from ditto_native import DittoError

REPO = Path(__file__).resolve().parents[1]
TINY_TOL = 1e-4  # float32 logits, tiny models
SMOL_TOL = 1e-3  # float32 logits, SmolLM2
GREEDY_TOKENS = 32
CONVERSATION = [
    {"role": "system", "content": "You are Ada Lovelace, English mathematician"},
    {"role": "user", "content": "What is the Analytical Engine? 1843 笔记"},
    {"role": "assistant", "content": "A machine of gears that weaves algebra."},
    {"role": "user", "content": "And the notes?"},
]
PROMPT = CONVERSATION[:2]
TEXTS = ["Hello world, 12345 and 你好!", "  leading spaces\n\nnew lines\ttabs", "<|im_end|> [INST] <think> literal specials"]

# family -> (shared tokenizer folder whose chat template and special tokens are used, pre-tokenizer, model overrides)
FAMILIES = {
    "llama": ("llama3-instruct", "llama3", dict(tie_word_embeddings=False)),
    "mistral": ("mistral-instruct", "bytelevel", dict(tie_word_embeddings=False)),
    "qwen2": ("qwen2.5-instruct", "qwen2", dict(tie_word_embeddings=True)),
    "qwen3": ("qwen3", "qwen2", dict(tie_word_embeddings=True, head_dim=32)),
}
CORPUS = [
    "The Analytical Engine weaves algebraic patterns just as the Jacquard loom weaves flowers and leaves.",
    "Lovelace wrote the first published algorithm, 1843. 她写了第一个算法。 数学 与 机器",
    "You are a character; answer in character, and refuse what the role cannot know.",
] * 20


# ---- helpers -------------------------------------------------------------------------------


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def our_logits(model, tokens: np.ndarray) -> np.ndarray:
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    logits, _ = model(jnp.asarray(tokens), jnp.asarray(positions))
    return np.asarray(logits, np.float32)


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


def params(model) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_same_params(first, second, cast=None) -> None:
    a, b = params(first), params(second)
    assert a.keys() == b.keys()
    for name in a:
        want = a[name] if cast is None else cast(name, a[name])
        np.testing.assert_array_equal(want, b[name], err_msg=name)


TRANSPOSED = {"/".join(rule.nnx_path): rule.transform is table.Transform.TRANSPOSE for rule in LLAMA_FAMILY}


def matrix_names(cfg) -> set[str]:
    """NNX parameters whose HF tensors are matrices (GGUF stores vectors as float32 at any dtype)."""
    out = set()
    shapes = params_shapes(cfg)
    for rule in LLAMA_FAMILY:
        name = "/".join(rule.nnx_path)
        if name in shapes and len(shapes[name]) - rule.stacked >= 2:
            out.add(name)
    return out


def params_shapes(cfg) -> dict[str, tuple]:
    from ditto_jax.model import abstract_model

    return {"/".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(abstract_model(cfg), nnx.Param))}


def rounded_to(model, dtype, names: set[str]):
    """A copy of `model` with the named parameters rounded through `dtype`."""
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)

    def walk(tree, prefix=()):
        for key, value in tree.items():
            path = prefix + (str(key),)
            if isinstance(value, dict):
                walk(value, path)
            elif "/".join(path) in names:
                tree[key] = jnp.asarray(np.asarray(value).astype(dtype).astype(np.float32))

    walk(pure)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def greedy_ours(model, bundle, messages) -> list[int]:
    engine = Engine(model, bundle, max_batch=1)
    request = GenerationRequest(messages, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, temperature=0)
    return list(engine.generate([request])[0].token_ids)


def greedy_torch(model, tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, do_sample=False
        )
    return out[0, ids.shape[1]:].tolist()


def prompt_tokens(bundle, vocab: int) -> np.ndarray:
    ids = bundle.encode_chat(CONVERSATION)
    assert max(ids) < vocab
    return np.asarray([ids])


def run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()  # drop what fixtures printed (transformers' save progress)
    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err.strip()


# ---- tiny sources: a random model of each family plus a small trained tokenizer --------------------


def tiny_tokenizer(family: str, shared_dir, out) -> dict:
    """Train a byte-level BPE with the family's special tokens; write tokenizer files to `out`."""
    folder, pre, _ = FAMILIES[family]
    real_config = json.loads((shared_dir / "tokenizers" / folder / "tokenizer_config.json").read_text())
    real = json.loads((shared_dir / "tokenizers" / folder / "tokenizer.json").read_text())
    template = real_config["chat_template"]
    named = {real_config.get(k) for k in ("bos_token", "eos_token", "pad_token")} - {None}
    special = [a["content"] for a in real["added_tokens"] if a["special"] and (a["content"] in template or a["content"] in named)]
    plain = [a["content"] for a in real["added_tokens"] if not a["special"] and a["content"] in template]

    tokenizer = Tokenizer(BPE())
    if pre == "bytelevel":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(GGUF_PRE_SPLITS[pre]), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=360, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.add_tokens(plain)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {k: real_config.get(k) for k in ("bos_token", "eos_token", "pad_token") if real_config.get(k)}
    config.update(chat_template=template, tokenizer_class="PreTrainedTokenizerFast", add_bos_token=False, add_eos_token=False)
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    ids = {k: tokenizer.token_to_id(v) for k, v in config.items() if k in ("bos_token", "eos_token")}
    return {"vocab_size": tokenizer.get_vocab_size(), "bos_token_id": ids.get("bos_token"), "eos_token_id": ids.get("eos_token")}


@pytest.fixture(scope="session")
def tiny_source(make_tiny_hf, shared_dir, tmp_path_factory):
    """`source(family) -> (torch model, HF directory with tokenizer)`, built once per family."""
    made = {}

    def source(family: str):
        if family not in made:
            tok_dir = tmp_path_factory.mktemp(f"tok-{family}")
            ids = tiny_tokenizer(family, shared_dir, tok_dir)
            torch_model, path = make_tiny_hf(family, **FAMILIES[family][2], **ids)
            for f in tok_dir.iterdir():
                shutil.copy(f, path / f.name)
            made[family] = (torch_model, path)
        return made[family]

    return source


# ---- Hugging Face directories ----------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_export_round_trip(tiny_source, tmp_path, family):
    _, src = tiny_source(family)
    model, bundle = load_model(str(src))
    out = export_model(str(src), tmp_path / "export", max_shard_bytes=40_000)

    # Files: the right class with every field, sharded weights with an index, tokenizer, card.
    config = json.loads((out / "config.json").read_text())
    overrides = FAMILIES[family][2]
    assert config["architectures"] == [SUPPORTED_MODEL_TYPES[family]] and config["model_type"] == family
    assert config["tie_word_embeddings"] == overrides["tie_word_embeddings"]
    assert config["head_dim"] == overrides.get("head_dim", 16) and config["torch_dtype"] == "float32"
    assert config["eos_token_id"] == model.cfg.eos_token_id and config["bos_token_id"] == model.cfg.bos_token_id
    index = json.loads((out / INDEX_FILE).read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert all((out / name).is_file() for name in set(index["weight_map"].values()))
    assert all((p.stat().st_mode & 0o044) == (0o644 & ~umask()) & 0o044 for p in out.glob("*.safetensors"))  # not owner-only
    eot = end_of_turn_id(bundle)
    assert eot is not None and bundle.tokenizer.id_to_token(eot) in {"<|eot_id|>", "</s>", "<|im_end|>"}
    generation = json.loads((out / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert eot in (eos if isinstance(eos, list) else [eos])
    card = (out / "README.md").read_text()
    assert f"`{src}`" in card and "2401.12474" in card

    # transformers loads it and computes what the JAX model computes.
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(exported).__name__ == SUPPORTED_MODEL_TYPES[family]
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(exported, tokens) - our_logits(model, tokens)).max()
    assert diff <= TINY_TOL, f"{family}: max abs logit diff {diff:.3g}"
    for add in (True, False):
        messages = PROMPT if add else CONVERSATION
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add) == bundle.render(messages, add_generation_prompt=add)
    for text in TEXTS:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == bundle.encode(text)
    assert greedy_torch(exported, tokenizer, PROMPT) == greedy_ours(model, bundle, PROMPT)

    # Re-importing the export gives the same parameters and tokenizer.
    again, again_bundle = load_model(str(out))
    assert_same_params(model, again)
    assert again_bundle.render(CONVERSATION) == bundle.render(CONVERSATION)
    assert set(again_bundle.eos_token_ids) >= set(bundle.eos_token_ids)


def test_hf_export_keeps_the_source_dtype_and_casts_on_request(make_tiny_hf, tiny_source, tmp_path):
    _, src = tiny_source("qwen2")
    bf16 = tmp_path / "bf16-source"
    shutil.copytree(src, bf16)
    bf16_model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    bf16_model.save_pretrained(bf16)
    assert source_dtype(resolve_model_ref(str(bf16))) == "bfloat16"

    out = export_model(str(bf16), tmp_path / "default")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    source_model, _ = load_model(str(bf16))
    assert_same_params(source_model, load_model(str(out))[0])  # bf16 -> bf16 is a copy

    half = export_model(str(src), tmp_path / "f16", dtype="float16")
    assert transformers.AutoModelForCausalLM.from_pretrained(half).dtype == torch.float16
    model, _ = load_model(str(src))
    assert_same_params(model, load_model(str(half))[0], cast=lambda _, v: v.astype(np.float16).astype(np.float32))


def test_export_fetches_one_tensor_at_a_time(tiny_source, tmp_path, monkeypatch):
    """Each device-to-host transfer is one HF tensor (a layer's slice), never a stacked parameter."""
    _, src = tiny_source("llama")
    model, _ = load_model(str(src))
    fetched = []
    real = table._to_host

    def spy(value):
        host = real(value)
        fetched.append(host.nbytes)
        return host

    monkeypatch.setattr(table, "_to_host", spy)
    export_model(str(src), tmp_path / "hf")
    per_tensor = [math.prod(e.shape) * 4 for e in table.hf_entries(model).values()]  # float32
    assert sorted(fetched) == sorted(per_tensor)  # e.g. 2 layers' q_proj fetched as 2 transfers, not one [L, ...]
    assert max(fetched) < sum(v.nbytes for v in params(model).values()) / 4


TWO_PROCESS_EXPORT = """
import sys
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ditto_jax.export import write_model
from ditto_jax.loader import load_model

src, out, fmt, port, rank = sys.argv[1:6]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(rank))
model, bundle = load_model(src)
mesh = Mesh(np.array(jax.devices()), ("x",))  # 2 processes x 2 devices


def spread(a):
    host = np.asarray(a)
    sharding = NamedSharding(mesh, P(*[None] * (a.ndim - 1), "x"))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


nnx.update(model, jax.tree.map(spread, nnx.state(model, nnx.Param)))
assert not model.layers.wq_ldh[...].is_fully_addressable
write_model(model, bundle, out, fmt=fmt)
"""


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_two_processes_export_what_one_does(tiny_source, tmp_path, fmt):
    """Parameters spread over 2 processes are all-gathered per tensor; process 0 writes the same export."""
    import socket

    _, src = tiny_source("llama")
    single = export_model(str(src), tmp_path / ("single" if fmt == "hf" else "single.gguf"), fmt=fmt)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "two" if fmt == "hf" else tmp_path / "two.gguf"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen([sys.executable, "-c", TWO_PROCESS_EXPORT, str(src), str(out), fmt, str(port), str(rank)],
                         env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        for rank in range(2)
    ]
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert proc.returncode == 0, err[-2000:]
    if fmt == "hf":
        a, b = load_file(single / "model.safetensors"), load_file(out / "model.safetensors")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    else:
        a, b = open_gguf(single), open_gguf(out)
        assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
        assert all(np.array_equal(x.data, y.data) for x, y in zip(a.tensors, b.tensors))


# ---- GGUF --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gguf_exports(tiny_source, tmp_path_factory):
    """The tiny llama exported as GGUF at each dtype."""
    _, src = tiny_source("llama")
    folder = tmp_path_factory.mktemp("gguf")
    return src, {dtype: export_model(str(src), folder / f"tiny.{dtype}.gguf", fmt="gguf", dtype=dtype) for dtype in ("float32", "float16", "bfloat16", "q8_0")}


def test_gguf_float32_reimports_exactly_and_transformers_matches(tiny_gguf_exports):
    src, files = tiny_gguf_exports
    model, bundle = load_model(str(src))
    path = files["float32"]
    again, again_bundle = load_model(str(path))
    assert_same_params(model, again)  # Q/K permuted on export and back on import: exact

    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(hf, tokens) - our_logits(model, tokens)).max()
    assert diff <= TINY_TOL, f"max abs logit diff {diff:.3g}"

    # The tokenizer and template built from the file, ours and transformers', match the source's.
    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for built in (again_bundle, load_tokenizer(str(path))):
        assert built.render(CONVERSATION) == bundle.render(CONVERSATION)
    assert hf_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == bundle.render(PROMPT)
    for text in TEXTS + [bundle.render(CONVERSATION)]:
        assert again_bundle.encode(text) == bundle.encode(text)
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == bundle.encode(text)
    reader = open_gguf(path)
    assert reader.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    assert reader.fields["tokenizer.ggml.eot_token_id"].contents() == end_of_turn_id(bundle)


def test_gguf_float16_is_the_rounded_source(tiny_gguf_exports):
    src, files = tiny_gguf_exports
    model, bundle = load_model(str(src))
    matrices = matrix_names(model.cfg)
    for dtype, np_dtype in (("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16)):
        again, _ = load_model(str(files[dtype]))
        assert_same_params(model, again, cast=lambda n, v, t=np_dtype: v.astype(t).astype(np.float32) if n in matrices else v)

    rounded = rounded_to(model, np.float16, matrices)
    path = files["float16"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(hf, tokens) - our_logits(rounded, tokens)).max()
    assert diff <= SMOL_TOL, f"max abs logit diff {diff:.3g}"


def test_gguf_q8_0_is_within_its_quantization_error(tiny_gguf_exports):
    src, files = tiny_gguf_exports
    model, _ = load_model(str(src))
    again, _ = load_model(str(files["q8_0"]))
    types = {t.name: t.tensor_type.name for t in open_gguf(files["q8_0"]).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    matrices = matrix_names(model.cfg)
    first, second = params(model), params(again)
    for name in first:
        if name not in matrices:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)
            continue
        # Per block of 32 along a row: |error| <= d/2 for d = max|w|/127, plus the float16 rounding of d.
        w = first[name]
        # Kernels are [.., in, out] here, transposed from HF; GGUF rows (and blocks) run along HF's last axis.
        hf_layout = TRANSPOSED[name]
        rows = np.swapaxes(w, -1, -2) if hf_layout else w
        back = np.swapaxes(second[name], -1, -2) if hf_layout else second[name]
        blocks = rows.reshape(-1, 32)
        bound = np.abs(blocks).max(axis=1, keepdims=True) / 127 * 0.57
        err = np.abs(back.reshape(-1, 32) - blocks)
        assert (err <= bound + 1e-9).all(), name
        assert err.max() > 0, f"{name} was not quantized"


def test_gguf_mistral_is_written_as_llama(tiny_source, tmp_path):
    _, src = tiny_source("mistral")
    model, bundle = load_model(str(src))
    path = export_model(str(src), tmp_path / "mistral.gguf", fmt="gguf")
    again, again_bundle = load_model(str(path))
    assert again.cfg.model_type == "llama"
    assert_same_params(model, again)
    assert open_gguf(path).fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    for text in TEXTS + [bundle.render(CONVERSATION)]:
        assert again_bundle.encode(text) == bundle.encode(text)


def test_gguf_pads_a_vocabulary_smaller_than_the_embedding(make_tiny_hf, shared_dir, tmp_path):
    """Rows no token uses (an embedding padded past the tokenizer) become [PAD<id>] tokens, as llama.cpp writes them."""
    ids = tiny_tokenizer("llama", shared_dir, tmp_path / "tok")
    size = ids.pop("vocab_size")
    _, src = make_tiny_hf("llama", tie_word_embeddings=True, vocab_size=size + 8, **ids)
    for f in (tmp_path / "tok").iterdir():
        shutil.copy(f, src / f.name)
    model, bundle = load_model(str(src))
    path = export_model(str(src), tmp_path / "padded.gguf", fmt="gguf")
    tokens = open_gguf(path).fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == size + 8 and tokens[-1] == f"[PAD{size + 7}]"
    again, again_bundle = load_model(str(path))
    assert_same_params(model, again)
    for text in TEXTS + [bundle.render(CONVERSATION)]:
        assert again_bundle.encode(text) == bundle.encode(text)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_gguf_refuses_other_families_in_one_line(tiny_source, tmp_path, capsys, family):
    _, src = tiny_source(family)
    code, err = run_cli(capsys, "--model", src, "--out", tmp_path / "x.gguf", "--format", "gguf")
    assert code == 2 and "\n" not in err and "llama architecture" in err and family in err
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".*tmp"))


def test_gguf_refuses_what_llama_gguf_cannot_express(make_tiny_hf, shared_dir, tmp_path, capsys):
    """Llama 3.1 RoPE scaling (a rope_freqs tensor the importer refuses) and a SentencePiece-style tokenizer."""
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    _, scaled = make_tiny_hf("llama", tie_word_embeddings=False, rope_scaling=rope)
    code, err = run_cli(capsys, "--model", scaled, "--out", tmp_path / "a.gguf", "--format", "gguf")
    assert code == 2 and "\n" not in err and "rope_scaling 'llama3' cannot be written" in err

    _, spm = make_tiny_hf("mistral", tie_word_embeddings=False)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shared_dir / "tokenizers" / "mistral-instruct" / name, spm / name)
    code, err = run_cli(capsys, "--model", spm, "--out", tmp_path / "b.gguf", "--format", "gguf")
    assert code == 2 and "\n" not in err and "SentencePiece-style BPE" in err
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))


# ---- SmolLM2: one export per format ------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_hf_export(tmp_path_factory):
    return export_model("smollm2", tmp_path_factory.mktemp("smol") / "hf")


@pytest.fixture(scope="session")
def smollm2_gguf_f16(tmp_path_factory):
    return export_model("smollm2", tmp_path_factory.mktemp("smol") / "smollm2.f16.gguf", fmt="gguf", dtype="float16")


def test_smollm2_hf_export(smollm2, smollm2_engine, smollm2_hf_export):
    model, bundle = smollm2
    out = smollm2_hf_export
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(exported, tokens) - our_logits(model, tokens)).max()
    assert diff <= SMOL_TOL, f"max abs logit diff {diff:.3g}"
    assert tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == bundle.render(PROMPT)
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == bundle.render(CONVERSATION, add_generation_prompt=False)
    request = GenerationRequest(PROMPT, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS, temperature=0)
    ours = list(smollm2_engine.generate([request])[0].token_ids)
    assert greedy_torch(exported, tokenizer, PROMPT) == ours
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"][0] == bundle.tokenizer.token_to_id("<|im_end|>")
    assert_same_params(model, load_model(str(out))[0])


def test_smollm2_gguf_float16(smollm2, smollm2_gguf_f16, hf_smollm2_tokenizer):
    model, bundle = smollm2
    path = smollm2_gguf_f16
    matrices = matrix_names(model.cfg)
    again, again_bundle = load_model(str(path))
    assert_same_params(model, again, cast=lambda n, v: v.astype(np.float16).astype(np.float32) if n in matrices else v)
    del again

    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(hf, tokens) - our_logits(rounded_to(model, np.float16, matrices), tokens)).max()
    assert diff <= SMOL_TOL, f"max abs logit diff {diff:.3g}"

    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert hf_tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == bundle.render(PROMPT)
    assert again_bundle.render(CONVERSATION) == bundle.render(CONVERSATION)
    for text in TEXTS + [bundle.render(CONVERSATION)]:
        ids = bundle.encode(text)
        assert again_bundle.encode(text) == ids
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids == hf_smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- a training checkpoint, trained for a few steps in this session -----------------------------------

REPORT = "| model | consistency | knowledge | rejection |\n|---|---|---|---|\n| tiny-ditto | 0.25 | 1.0 | 0.5 |\n"


@pytest.fixture(scope="session")
def trained_run(tiny_source, tmp_path_factory):
    """(run directory, base model directory): the tiny llama fine-tuned for 2 steps on
    sessions tokenized by `ditto-data tokenize`, with an evaluation report beside it."""
    from data_tools.tokenize import TokenizeConfig, load_tokenizer_source, tokenize_file
    from dialogue_fixtures import make_sessions, write_sessions
    from ditto_jax.train.config import config_from_dict
    from ditto_jax.train.run import train

    _, src = tiny_source("llama")
    root = tmp_path_factory.mktemp("run")
    clean = write_sessions(root / "clean.parquet", make_sessions(30, seed=3, turns=1))
    shards = root / "shards"
    tokenize_file(clean, load_tokenizer_source(str(src)), shards, TokenizeConfig(seq_len=256, heldout_fraction=0.2), progress=False)
    out = root / "run"
    cfg = config_from_dict(dict(
        model=str(src), data=str(shards), out=str(out), steps=2, global_batch=2, micro_batch=1, lr=1e-2, warmup_ratio=0.0,
        save_every=2, eval_every=2, keep=1, compute_dtype="float32", attention="dense", mesh={"data": 1, "fsdp": 1, "tensor": 1},
    ))
    train(cfg, progress=False)
    (out / "eval").mkdir()
    (out / "eval" / "report.md").write_text(REPORT, encoding="utf-8")
    return out, src


def test_checkpoint_hf_export(trained_run, tmp_path):
    run, src = trained_run
    model, bundle = load_model(str(run))
    base, _ = load_model(str(src))
    assert any(not np.array_equal(a, b) for a, b in zip(params(model).values(), params(base).values()))  # it trained

    out = export_model(str(run), tmp_path / "hf")
    exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(exported, tokens) - our_logits(model, tokens)).max()
    assert diff <= TINY_TOL, f"max abs logit diff {diff:.3g}"
    assert tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True) == bundle.render(PROMPT)
    assert greedy_torch(exported, tokenizer, PROMPT) == greedy_ours(model, bundle, PROMPT)
    assert_same_params(model, load_model(str(out))[0])

    # The card: base model, data from the shard manifest, settings from config.toml, the report.
    card = (out / "README.md").read_text()
    manifest = json.loads((run.parent / "shards" / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert set(manifest["languages"]) == {"en", "zh"}
    for expected in (
        f"fine-tuned from `{src}`", "(step 2)", f"| train | {train['num_segments']:,} | {train['num_rows']:,} | {train['real_tokens']:,} |",
        ", ".join(f"{lang} {n:,}" for lang, n in manifest["languages"].items()), "clean.parquet", "| lr | `0.01` |",
        "| steps | `2` |", "| tiny-ditto | 0.25 | 1.0 | 0.5 |", "- en", "2401.12474",
    ):
        assert expected in card, expected


def test_checkpoint_gguf_export(trained_run, tmp_path):
    run, _ = trained_run
    model, bundle = load_model(str(run / "checkpoints" / "2"))
    path = export_model(str(run / "checkpoints" / "2"), tmp_path / "run.gguf", fmt="gguf")
    again, again_bundle = load_model(str(path))
    assert_same_params(model, again)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = prompt_tokens(bundle, model.cfg.vocab_size)
    diff = np.abs(torch_logits(hf, tokens) - our_logits(model, tokens)).max()
    assert diff <= TINY_TOL, f"max abs logit diff {diff:.3g}"
    for text in TEXTS + [bundle.render(CONVERSATION)]:
        assert again_bundle.encode(text) == bundle.encode(text)
    assert again_bundle.render(CONVERSATION) == bundle.render(CONVERSATION)


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_gives_one_line_errors(tiny_source, tmp_path, capsys):
    _, src = tiny_source("llama")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["--model", src, "--out", taken], "already exists and is not empty"),
        (["--model", src, "--out", tmp_path / "a", "--dtype", "q8_0"], "q8_0 is for --format gguf"),
        (["--model", src, "--out", tmp_path / "a", "--dtype", "int4"], "--dtype int4 is not supported"),
        (["--model", src, "--out", tmp_path / "a", "--format", "peft"], "--format peft needs a LoRA training run"),
        (["--model", src, "--out", tmp_path / "a", "--format", "onnx"], "unknown export format"),
        (["--model", tmp_path / "nowhere", "--out", tmp_path / "a"], "no such model"),
        (["--model", src, "--out", src, "--force"], "would replace the source model"),
        (["--model", src, "--out", tmp_path / "a", "--max-shard-size", "lots"], "--max-shard-size"),
    ]
    for args, message in cases:
        code, err = run_cli(capsys, *args)
        assert code == 2 and "\n" not in err and message in err, (args, err)
        assert err.startswith("ditto-jax export: error:")
    assert (taken / "keep.txt").read_text() == "mine" and not (tmp_path / "a").exists()

    # --force replaces the old output as a whole.
    code, err = run_cli(capsys, "--model", src, "--out", taken, "--force")
    assert code == 0 and not (taken / "keep.txt").exists() and (taken / "config.json").is_file()


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("40KiB") == 40 * 1024 and parse_size("1000") == 1000
    assert parse_size("1.5MB") == 1_500_000
    with pytest.raises(DittoError):
        parse_size("0GB")


# ---- the model card ----------------------------------------------------------------------------------


def test_model_card_summarises_the_run(tmp_path):
    """A run folder's config, shard manifest and evaluation report end up in the card."""
    shards = tmp_path / "shards"
    shards.mkdir()
    manifest = {
        "seq_len": 2048, "tokenizer": {"name": "SmolLM2-135M-Instruct", "sha256": "ab"},
        "splits": {
            "train": {"num_rows": 10, "num_segments": 95, "real_tokens": 19000, "loss_tokens": 9000},
            "heldout": {"num_rows": 1, "num_segments": 3, "real_tokens": 600, "loss_tokens": 300},
        },
        "languages": {"en": 60, "zh": 38}, "sessions_in": 98, "sources": {"/data/clean.parquet": "cd" * 32}, "dropped": {"overlong": 2},
    }
    (shards / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    (run / "checkpoints" / "12").mkdir(parents=True)
    (run / "config.toml").write_text(f'model = "smollm2"\ndata = "{shards}"\nlr = 2e-05\nsteps = 12\n[mesh]\nfsdp = -1\n')
    (run / "eval").mkdir()
    (run / "eval" / "report.md").write_text("| model | consistency |\n|---|---|\n| ditto | 0.81 |\n")

    info = find_run(run / "checkpoints" / "12")
    assert info is not None and info.step == 12 and info.manifest == manifest
    card = model_card(ModelCardInputs("ditto-smol", str(run), "hf", "float32", "LlamaForCausalLM", 134_515_008, info))
    for expected in ("fine-tuned from `smollm2`", "step 12", "| train | 95 | 10 | 19,000 | 9,000 |", "en 60, zh 38",
                     "of the 98 sessions tokenized: en 60, zh 38", "clean.parquet", "| lr | `2e-05` |", "| mesh.fsdp | `-1` |", "| ditto | 0.81 |", "2401.12474", "- zh"):
        assert expected in card, expected
    assert find_run(tmp_path / "shards") is None


SHARDED_EXPORT = """
import sys
import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ditto_jax.loader import load_model
from ditto_jax.weights.hf import export_hf

assert len(jax.devices()) == 8, jax.devices()
model, bundle = load_model(sys.argv[1])
mesh = Mesh(jax.devices(), ("x",))
state = nnx.state(model, nnx.Param)
# Split every parameter's last axis over the 8 devices, as an fsdp/tensor layout would.
sharded = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, P(*[None] * (a.ndim - 1), "x"))), state)
nnx.update(model, sharded)
assert not model.layers.wq_ldh[...].sharding.is_fully_replicated
export_hf(model, bundle, sys.argv[2])
"""


def test_sharded_parameters_export_the_same_bytes(tiny_source, tmp_path):
    """Parameters spread over 8 devices are gathered per tensor into the same files."""
    _, src = tiny_source("llama")
    model, bundle = load_model(str(src))
    export_hf(model, bundle, tmp_path / "single")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", SHARDED_EXPORT, str(src), str(tmp_path / "sharded")], check=True, env=env, cwd=REPO)
    single, sharded = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "sharded" / "model.safetensors")
    assert single.keys() == sharded.keys()
    for key in single:
        np.testing.assert_array_equal(single[key], sharded[key], err_msg=key)
