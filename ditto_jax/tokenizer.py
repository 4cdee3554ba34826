"""Tokenizer + chat template + special tokens of a model, as one bundle.

Two sources:
  * a Hugging Face folder: tokenizer.json, tokenizer_config.json (chat template,
    bos/eos/pad), optionally chat_template.jinja, config.json, generation_config.json;
  * a GGUF file: the vocabulary, merges and token types in its metadata are
    rebuilt into a `tokenizers` byte-level BPE, the way transformers' GGUF
    converter does (torch-free, so it works at runtime).

    bundle = load_tokenizer("smollm2")
    ids = bundle.encode_chat([{"role": "user", "content": "Hi"}])
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

import ditto_native
from ditto_jax.chat_template import ChatTemplate
from ditto_native import DittoError

# Chat models end a turn with one of these, while tokenizer_config.json often
# names a different eos (Llama 3: eos <|end_of_text|>, turns end <|eot_id|>).
# Generation stops on any of them that the vocabulary has as a special token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>")


@dataclasses.dataclass(frozen=True)
class TokenizerBundle:
    tokenizer: Tokenizer
    chat_template: ChatTemplate | None
    bos_token: str | None
    eos_token: str | None
    eos_token_ids: tuple[int, ...]  # generation stops on any of these
    pad_token_id: int  # any valid id; pads are masked anyway
    name: str  # e.g. "SmolLM2-135M-Instruct"

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **template_vars) -> str:
        if self.chat_template is None:
            raise DittoError(f"tokenizer {self.name}: no chat template")
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **template_vars)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True, **template_vars) -> list[int]:
        """Token ids of a conversation ({role, content} dicts), for inference.

        The same injection-safe Rust encoder as `ditto-data tokenize`
        (`ditto_native.PromptEncoder`): special-token text inside a message
        (a literal `<|im_end|>`) is encoded as plain text, so it cannot close
        a turn; a system message the template would drop is folded into the
        first user message, as for training. Otherwise the ids equal
        transformers' `apply_chat_template(tokenize=True)` (the template
        writes any bos itself).
        """
        return self.prompt_encoder(**template_vars).encode(
            [{"role": m["role"], "content": m["content"]} for m in messages], add_generation_prompt
        )

    def prompt_encoder(self, **template_vars):
        """The Rust prompt encoder for these template variables (built once per set, ~0.1 s)."""
        if self.chat_template is None:
            raise DittoError(f"tokenizer {self.name}: no chat template")
        key = json.dumps(template_vars, sort_keys=True, default=str)
        cache = self.__dict__.setdefault("_prompt_encoders", {})  # frozen dataclass: a private, lazily filled cache
        encoder = cache.get(key)
        if encoder is None:
            template = self.chat_template
            encoder = ditto_native.PromptEncoder(
                self.tokenizer.to_str(), template.source, template.bos_token, template.eos_token, template_vars or None
            )
            cache[key] = encoder
        return encoder

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str | Path) -> None:
        """tokenizer.json + tokenizer_config.json, loadable by `AutoTokenizer.from_pretrained`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(out / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.tokenizer.id_to_token(self.pad_token_id),
            # Our encode never adds specials; templates write bos themselves.
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template.source
        # transformers prefers a chat_template.jinja over the config's; never leave a stale one.
        (out / "chat_template.jinja").unlink(missing_ok=True)
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def sha256(self) -> str:
        return hashlib.sha256(self.tokenizer.to_str().encode("utf-8")).hexdigest()


def load_tokenizer(ref: str | Path) -> TokenizerBundle:
    """The tokenizer of any model reference, or of a folder with tokenizer.json."""
    path = Path(ref)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return tokenizer_from_hf_dir(path)
    from ditto_jax.loader import resolve_model_ref  # loader imports this module

    return resolve_model_ref(str(ref)).load_tokenizer()


# ---- Hugging Face folders ------------------------------------------------------------------


def tokenizer_from_hf_dir(folder: str | Path) -> TokenizerBundle:
    folder = Path(folder)
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise DittoError(f"{folder}: no tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise DittoError(f"{tok_path}: unreadable tokenizer ({exc})".replace("\n", " ")) from None
    config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")

    def special(name: str) -> str | None:
        value = config.get(name, special_map.get(name))
        return value.get("content") if isinstance(value, dict) else value

    bos, eos, pad = special("bos_token"), special("eos_token"), special("pad_token")
    # The model's own eos ids count too (Llama 3 lists several in generation_config.json).
    model_eos = [
        _read_json(folder / name).get("eos_token_id") for name in ("config.json", "generation_config.json")
    ]
    return _bundle(tokenizer, _chat_template_from_folder(folder, config), bos, eos, pad, model_eos, folder.name, folder)


def _chat_template_from_folder(folder: Path, config: dict) -> ChatTemplate | None:
    # Base models have none; otherwise ChatTemplate decides where it lives, as transformers does.
    if (folder / "chat_template.jinja").is_file() or config.get("chat_template"):
        return ChatTemplate.from_folder(folder)
    return None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DittoError(f"{path}: invalid JSON ({exc})") from None
    return value if isinstance(value, dict) else {}


def _bundle(tokenizer, chat_template, bos, eos, pad, extra_eos_ids, name, source) -> TokenizerBundle:
    def token_id(token: str | None, what: str) -> int | None:
        if token is None:
            return None
        tid = tokenizer.token_to_id(token)
        if tid is None:
            raise DittoError(f"{source}: {what} {token!r} is not in the vocabulary")
        return tid

    token_id(bos, "bos_token")  # only checked: templates write the bos text themselves
    eos_id, pad_id = token_id(eos, "eos_token"), token_id(pad, "pad_token")
    eos_ids: list[int] = [] if eos_id is None else [eos_id]
    for value in extra_eos_ids:
        eos_ids.extend(value if isinstance(value, list) else [] if value is None else [value])
    specials = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    eos_ids.extend(tokenizer.token_to_id(t) for t in END_OF_TURN_TOKENS if t in specials)
    eos_ids = list(dict.fromkeys(int(i) for i in eos_ids))  # dedupe, keep order
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    return TokenizerBundle(tokenizer, chat_template, bos, eos, tuple(eos_ids), pad_id, name)


# ---- GGUF ----------------------------------------------------------------------------------

# Pre-tokenizer split regexes by `tokenizer.ggml.pre`, as transformers' GGUF converter uses
# them. Names it does not list (e.g. SmolLM2's "smollm") get the default GPT-2 byte-level
# regex there, so they do here: our ids must equal what transformers gives for the same file.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_PRE_SPLITS = {
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
}

# GGUF token types (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4
_QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are spelled in.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space,
    and a few more) are moved to code points 256 and up, in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    moved = (b for b in range(256) if b not in table)
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return table


def tokenizer_from_gguf(metadata: Mapping[str, Any], path: str | Path) -> TokenizerBundle:
    """The bundle a GGUF file's metadata (`weights.gguf_meta.read_gguf_metadata`) describes."""
    field = metadata.get
    kind = field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise DittoError(f"{path}: GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    tokens: list[str] = field("tokenizer.ggml.tokens") or []
    merges: list[str] = field("tokenizer.ggml.merges") or []
    types: list[int] = field("tokenizer.ggml.token_type") or []
    if not tokens or not merges:
        raise DittoError(f"{path}: GGUF has no tokenizer.ggml.tokens/merges")
    pre = field("tokenizer.ggml.pre")

    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())

    def is_spelled(text: str) -> bool:
        return set(text) <= spelled

    # A token written outside the byte alphabet (rare) is respelled byte by byte, as transformers does.
    # Perf: one check over the whole vocabulary first, not a set per token (a third of this function).
    if is_spelled("".join(tokens)):
        vocab = dict(zip(tokens, range(len(tokens))))
    else:
        vocab = {tok if is_spelled(tok) else "".join(alphabet[b] for b in tok.encode("utf-8")): i for i, tok in enumerate(tokens)}
    model = BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tokenizer = Tokenizer(model)
    split = GGUF_PRE_SPLITS.get(pre)
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens (<|im_end|>, ...) must stay whole and are special; a "control" token spelled
    # outside the byte alphabet is a llama.cpp mislabel and would grow the vocabulary, so skip it.
    control = [AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types) if k == _CONTROL and is_spelled(t)]
    tokenizer.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False) for t, k in zip(tokens, types) if k == _USER_DEFINED and t in vocab]
    tokenizer.add_tokens(user)

    def token(key: str) -> str | None:
        tid = field(f"tokenizer.ggml.{key}")
        if tid is None:
            return None
        if not 0 <= tid < len(tokens):
            raise DittoError(f"{path}: tokenizer.ggml.{key} {tid} is outside the vocabulary")
        return tokens[tid]

    name = _QUANT_SUFFIX.sub("", Path(path).stem)
    bos, eos, pad = token("bos_token_id"), token("eos_token_id"), token("padding_token_id")
    source = field("tokenizer.chat_template")
    template = None if source is None else ChatTemplate(source, bos_token=bos, eos_token=eos)
    return _bundle(tokenizer, template, bos, eos, pad, [], name, path)


def end_of_turn_id(bundle: TokenizerBundle) -> int | None:
    """The special token the chat template closes an assistant turn with (`<|im_end|>`,
    `<|eot_id|>`, `</s>`), found by rendering one reply; None without a template."""
    if bundle.chat_template is None:
        return None
    marker = "Ditto end-of-turn probe"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    try:
        text = bundle.render(messages, add_generation_prompt=False)
    except DittoError:
        return None
    if marker not in text:
        return None
    specials = {i for i, t in bundle.tokenizer.get_added_tokens_decoder().items() if t.special}
    return next((i for i in bundle.encode(text.rsplit(marker, 1)[1]) if i in specials), None)


# ---- GGUF, the other way: a bundle as tokenizer.ggml.* metadata ---------------------------------

# llama.cpp token types (llama_token_type) written for export
_NORMAL, _UNUSED = 1, 5


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    """What a GGUF file's tokenizer.* keys hold for a byte-level BPE tokenizer."""

    pre: str  # llama.cpp's pre-tokenizer name
    tokens: list[str]  # one per id, padded to the model's vocab_size
    token_types: list[int]
    merges: list[str]  # "left right"
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    eot_id: int | None
    chat_template: str | None


def gguf_vocab(bundle: TokenizerBundle, vocab_size: int) -> GGUFVocab:
    """The bundle's tokenizer as GGUF metadata, so that `tokenizer_from_gguf` rebuilds it.

    Only byte-level BPE ("gpt2" in llama.cpp) with a pre-tokenizer llama.cpp names is
    expressible; anything else is refused in one line.
    """
    spec = json.loads(bundle.tokenizer.to_str())
    where = f"tokenizer {bundle.name}"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise DittoError(f"{where}: GGUF export needs a byte-level BPE tokenizer, not {model.get('type')!r}")
    if spec.get("normalizer") is not None:
        raise DittoError(f"{where}: GGUF cannot express its normalizer ({spec['normalizer'].get('type')})")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("dropout"):
        raise DittoError(f"{where}: SentencePiece-style BPE (byte_fallback, subword prefix/suffix or dropout) is not supported for GGUF export; only byte-level BPE is")
    pre = _gguf_pre_name(spec.get("pre_tokenizer"), where)

    vocab = bundle.tokenizer.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    if size > vocab_size:
        raise DittoError(f"{where}: {size} tokens do not fit the model's vocab_size {vocab_size}")
    tokens: list[str | None] = [None] * vocab_size
    for token, i in vocab.items():
        tokens[i] = token
    types = [_NORMAL if t is not None else _UNUSED for t in tokens]
    for i, added in bundle.tokenizer.get_added_tokens_decoder().items():
        types[i] = _CONTROL if added.special else _USER_DEFINED
    # llama.cpp's converter names the rows no token uses [PAD<id>]; they are never produced.
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]

    def token_id(token: str | None) -> int | None:
        return None if token is None else bundle.tokenizer.token_to_id(token)

    template = bundle.chat_template
    return GGUFVocab(
        pre=pre, tokens=tokens, token_types=types, merges=merges,
        bos_id=token_id(bundle.bos_token), eos_id=token_id(bundle.eos_token), pad_id=bundle.pad_token_id,
        eot_id=end_of_turn_id(bundle), chat_template=None if template is None else template.source,
    )


def _gguf_pre_name(pre: dict | None, where: str) -> str:
    """llama.cpp's name for a byte-level pre-tokenizer, read back by `tokenizer_from_gguf`."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt-2"  # GPT-2's own split, which ByteLevel applies by itself
    parts = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else []
    if len(parts) == 2 and parts[1].get("type") == "ByteLevel" and not parts[1].get("add_prefix_space"):
        first = parts[0]
        regex = (first.get("pattern") or {}).get("Regex")
        if first.get("type") == "Split" and not parts[1].get("use_regex", True) and first.get("behavior") == "Isolated" and not first.get("invert"):
            for name in _GGUF_PRE_NAMES:
                if GGUF_PRE_SPLITS[name] == regex:
                    return name
        if first.get("type") == "Digits" and first.get("individual_digits") and parts[1].get("use_regex", True):
            return "smollm"  # SmolLM's digit-by-digit split (llama.cpp knows it by this name)
    raise DittoError(f"{where}: GGUF cannot name its pre-tokenizer ({json.dumps(pre)[:120]})")


# The canonical name written for each split regex (the first name llama.cpp gave it).
_GGUF_PRE_NAMES = ("llama-bpe", "qwen2")
