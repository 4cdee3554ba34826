"""The batched engine: batching invariance, stops, penalties, seeds, compaction, constraints."""
from __future__ import annotations

import json

import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest
from flax import nnx

from ditto_jax.config import tiny_config
from ditto_jax.generation import Engine, GenerationRequest
from ditto_jax.model import init_model
from ditto_native import DittoError


def _ask(text, **kw):
    return GenerationRequest([{"role": "user", "content": text}], **kw)


@pytest.fixture(scope="module")
def tiny_engine(smollm2):
    """A random 2-layer model over SmolLM2's real tokenizer: fast, and its greedy output is arbitrary text."""
    _, bundle = smollm2
    model = init_model(tiny_config(vocab_size=bundle.tokenizer.get_vocab_size(), max_position_embeddings=1024), seed=3)
    return Engine(model, bundle, max_batch=4)


# ---- SmolLM2 ---------------------------------------------------------------------------------

PROMPTS = [
    "What is the capital of France?",
    "Write one short sentence about the deep blue sea.",
    "Hi",
    "List three colours of the rainbow, then explain in a few words why the sky looks blue during the day.",
]


def test_batched_greedy_equals_one_by_one(smollm2_engine):
    requests = [_ask(p, max_new_tokens=16, temperature=0) for p in PROMPTS]
    batched = smollm2_engine.generate(requests)
    single = [smollm2_engine.generate([r])[0] for r in requests]
    assert len({c.prompt_tokens for c in batched}) == len(PROMPTS)  # really mixed lengths
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert [c.text for c in batched] == [c.text for c in single]
    assert "Paris" in batched[0].text


def test_greedy_matches_transformers(smollm2, smollm2_engine, hf_smollm2_model):
    import torch

    _, bundle = smollm2
    messages = [{"role": "user", "content": PROMPTS[1]}]
    ours = smollm2_engine.generate([GenerationRequest(messages, max_new_tokens=16, min_new_tokens=16, temperature=0)])[0]
    ids = torch.tensor([bundle.encode_chat(messages)])
    with torch.inference_mode():
        out = hf_smollm2_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert list(ours.token_ids) == out[0, ids.shape[1] :].tolist()


def test_eos_ends_a_reply_unless_min_new_tokens_masks_it(smollm2, smollm2_engine):
    _, bundle = smollm2
    done, forced = smollm2_engine.generate(
        [_ask(PROMPTS[0], max_new_tokens=40, temperature=0), _ask(PROMPTS[0], max_new_tokens=40, min_new_tokens=40, temperature=0)]
    )
    assert done.finish_reason == "stop" and done.token_ids[-1] in bundle.eos_token_ids
    assert done.completion_tokens == len(done.token_ids) < 40
    assert "<|im_end|>" not in done.text and done.text == bundle.decode(done.token_ids[:-1])
    assert forced.finish_reason == "length" and forced.completion_tokens == 40
    assert forced.token_ids[: len(done.token_ids) - 1] == done.token_ids[:-1]
    assert not set(forced.token_ids) & set(bundle.eos_token_ids)


# maxLength keeps the longest valid reply (3 x 50 one-char tokens + the frame) inside max_new_tokens:
# unbounded, this 135M model sometimes rambles inside a string until the token limit.
QUESTIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "questions": {"type": "array", "items": {"type": "string", "maxLength": 50}, "minItems": 3, "maxItems": 3}
    },
    "required": ["questions"],
    "additionalProperties": False,
}


def test_json_schema_constraint_gives_valid_json(smollm2_engine):
    messages = [
        {"role": "system", "content": "You write quiz questions."},
        {"role": "user", "content": "Write 3 short questions that Napoleon Bonaparte could answer but Marie Curie could not. "
                                    'Reply as JSON: {"questions": [...]}'},
    ]
    requests = [GenerationRequest(messages, max_new_tokens=170, temperature=0.7, seed=s, json_schema=QUESTIONS_SCHEMA) for s in range(20)]
    completions = smollm2_engine.generate(requests)
    valid = 0
    for c in completions:
        try:
            jsonschema.validate(json.loads(c.text), QUESTIONS_SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            assert c.finish_reason == "length"  # the only way out of the grammar is running out of tokens
    assert valid >= 19, [c.text for c in completions]
    assert len({c.text for c in completions}) > 10  # sampled, not one answer repeated


def test_choices_constraint_returns_one_choice(smollm2_engine):
    choices = ["yes", "no"]
    odd = ['"quoted"', "naïve café", "答案 B"]
    requests = [_ask("Is Paris in France? Answer yes or no.", choices=choices, temperature=t, seed=s) for t, s in [(0, 0), (1.0, 1), (1.0, 2)]]
    requests += [_ask("Pick one.", choices=odd, temperature=1.5, seed=s) for s in range(4)]
    completions = smollm2_engine.generate(requests)
    assert completions[0].text == "yes"
    assert all(c.text in choices for c in completions[:3])
    assert all(c.text in odd for c in completions[3:])
    assert all(c.finish_reason == "stop" for c in completions)


def test_bad_constraints_and_requests_are_one_line_errors(smollm2_engine):
    with pytest.raises(DittoError, match=r"request 1: invalid constraint") as err:
        smollm2_engine.generate([_ask("a", choices=["x"]), _ask("b", json_schema={"type": "object", "properties": {"a": {"$ref": "#/nope"}}})])
    assert "\n" not in str(err.value)
    for bad, field in [(dict(temperature=-1), "temperature"), (dict(stop="x"), "stop"), (dict(top_p=0), "top_p"),
                       (dict(max_new_tokens=0), "max_new_tokens"), (dict(choices=["a"], json_schema={}), "not both")]:
        with pytest.raises(DittoError, match=field):
            smollm2_engine.generate([_ask("hi", **bad)])


# ---- tiny random model over the real tokenizer ------------------------------------------------


def test_max_new_tokens_and_stop_strings(tiny_engine):
    full = tiny_engine.generate([_ask("Tell me a story.", max_new_tokens=12, temperature=0)])[0]
    assert full.finish_reason == "length" and full.completion_tokens == len(full.token_ids) == 12
    text = full.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop
    cut = tiny_engine.generate([_ask("Tell me a story.", max_new_tokens=12, temperature=0, stop=["never-there", stop])])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == text[: text.find(stop)]
    assert cut.token_ids == full.token_ids[: cut.completion_tokens]


@pytest.fixture(scope="module")
def reference_greedy(smollm2):
    """Greedy tokens from the model's own full forward pass (no cache) and the HF penalty rule in NumPy."""
    _, bundle = smollm2
    model = init_model(tiny_config(vocab_size=bundle.tokenizer.get_vocab_size(), max_position_embeddings=1024), seed=3)
    forward = nnx.jit(lambda m, tokens, segments: m(tokens, jnp.arange(tokens.shape[1])[None], segments)[0])

    def run(messages, steps, penalty=1.0):
        prompt = list(bundle.encode_chat(messages))
        ids, width = list(prompt), -(-(len(prompt) + steps) // 128) * 128  # right padding is causal-safe
        for _ in range(steps):
            tokens = np.zeros((1, width), np.int32)
            tokens[0, : len(ids)] = ids
            logits = forward(model, jnp.asarray(tokens), jnp.asarray((np.arange(width) < len(ids))[None].astype(np.int32)))
            row = np.asarray(logits[0, len(ids) - 1], np.float64)
            seen = np.unique(ids)
            row[seen] = np.where(row[seen] < 0, row[seen] * penalty, row[seen] / penalty)
            ids.append(int(np.argmax(row)))
        return ids[len(prompt) :]

    return run


def test_repetition_penalty_matches_a_full_forward_reference(tiny_engine, reference_greedy):
    messages = [{"role": "user", "content": "Say something."}]
    steps = 10
    # > 1 discourages repeats; < 1 favours them (same HF rule), which on a random model surely changes the output.
    for penalty in (1.5, 0.5):
        got = tiny_engine.generate([GenerationRequest(messages, max_new_tokens=steps, temperature=0, repetition_penalty=penalty)])[0]
        assert list(got.token_ids) == reference_greedy(messages, steps, penalty)
    plain = tiny_engine.generate([GenerationRequest(messages, max_new_tokens=steps, temperature=0)])[0]
    assert list(plain.token_ids) == reference_greedy(messages, steps)
    assert list(got.token_ids) != list(plain.token_ids)


def test_long_prompts_prefill_in_chunks(tiny_engine, reference_greedy):
    """A prompt past one 256-token prefill chunk, batched with a short one, still matches the full forward pass."""
    long_messages = [{"role": "user", "content": " ".join(f"word{i}" for i in range(200))}]
    short_messages = [{"role": "user", "content": "Short."}]
    got = tiny_engine.generate([GenerationRequest(m, max_new_tokens=6, temperature=0) for m in (long_messages, short_messages)])
    assert got[0].prompt_tokens > 300  # two chunks, the first partly padding
    assert [list(c.token_ids) for c in got] == [reference_greedy(long_messages, 6), reference_greedy(short_messages, 6)]


def test_the_cache_grows_as_rows_advance(tiny_engine, reference_greedy):
    """The cache starts at the prompt's bucket and lengthens as the row advances (64, then 128 slots), still exact."""
    messages = [{"role": "user", "content": "Grow."}]
    slots_seen = []
    tiny_engine.step_hooks.append(lambda _: slots_seen.append(tiny_engine._buffers.shape[1]))
    try:
        got = tiny_engine.generate([GenerationRequest(messages, max_new_tokens=80, min_new_tokens=80, temperature=0)])[0]
    finally:
        tiny_engine.step_hooks.pop()
    assert 64 < got.prompt_tokens + 80 <= 128 and got.prompt_tokens < 64
    assert sorted(set(slots_seen)) == [64, 128] and slots_seen == sorted(slots_seen)
    assert list(got.token_ids) == reference_greedy(messages, 80)


def test_rows_do_not_depend_on_their_batch(tiny_engine):
    """Mixed lengths, greedy and seeded sampling, early finishers (so the batch compacts): each row equals its solo run."""
    requests = [
        _ask("One.", max_new_tokens=1, temperature=0),
        _ask("A much longer prompt, with many more tokens in it than the others have.", max_new_tokens=2, temperature=1.0, seed=11),
        _ask("Three.", max_new_tokens=3, temperature=0.9, top_k=40, top_p=0.9, seed=12),
        _ask("Four, the long one.", max_new_tokens=40, temperature=1.2, top_p=0.8, repetition_penalty=1.2, seed=13),
    ]
    together = tiny_engine.generate(requests)
    alone = [tiny_engine.generate([r])[0] for r in requests]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.completion_tokens for c in together] == [1, 2, 3, 40]
    reordered = tiny_engine.generate(requests[::-1])[::-1]
    assert [c.token_ids for c in reordered] == [c.token_ids for c in alone]


def test_n_samples_are_seeded_and_distinct(tiny_engine):
    request = _ask("Go.", max_new_tokens=8, temperature=1.0, n=3, seed=5)
    first = tiny_engine.generate([_ask("Other.", max_new_tokens=4, temperature=0), request])
    second = tiny_engine.generate([request])
    assert len(first) == 4 and len(second) == 3
    assert [c.token_ids for c in first[1:]] == [c.token_ids for c in second]
    assert len({c.token_ids for c in second}) == 3
    unseeded = tiny_engine.generate([_ask("Go.", max_new_tokens=8, temperature=1.0, n=2)])
    assert unseeded[0].token_ids != unseeded[1].token_ids


# ---- continuous batching -----------------------------------------------------------------------


def _drive(engine, tickets, *, submit_after=None, limit=2000):
    """Step the engine until every ticket is done; `submit_after = (steps, thunk)` submits more mid-run.

    Returns the decode-step count at which each ticket (in submission order) finished.
    """
    tickets = list(tickets)
    finished_at: dict[int, int] = {}
    start = engine.decode_steps
    for _ in range(limit):
        if submit_after and engine.decode_steps - start == submit_after[0]:
            tickets.append(submit_after[1]())
            submit_after = None
        if all(t.done for t in tickets) and submit_after is None:
            break
        engine.step()
        for i, t in enumerate(tickets):
            if t.done and i not in finished_at:
                finished_at[i] = engine.decode_steps - start
    return tickets, [finished_at[i] for i in range(len(tickets))]


def test_a_later_short_request_overtakes_a_long_one(tiny_engine):
    long = _ask("Tell me a long story.", max_new_tokens=60, min_new_tokens=60, temperature=0)
    short = _ask("Hi", max_new_tokens=4, min_new_tokens=4, temperature=0)
    solo = tiny_engine.generate([short])[0]
    tickets, finished = _drive(tiny_engine, [tiny_engine.submit(long)], submit_after=(10, lambda: tiny_engine.submit(short)))
    (long_done,), (short_done,) = tickets[0].wait(0), tickets[1].wait(0)
    assert finished[1] < finished[0]  # submitted at step 10, done by ~step 14; the long one runs to step 60
    assert finished[1] <= 10 + 4 + 1 and finished[0] == 60  # it joined the running batch, which never waited for it
    assert short_done.token_ids == solo.token_ids and long_done.completion_tokens == 60
    assert tiny_engine.counts()["running"] == 0  # every row freed


def test_static_admission_waits_for_the_batch(smollm2):
    _, bundle = smollm2
    model = init_model(tiny_config(vocab_size=bundle.tokenizer.get_vocab_size(), max_position_embeddings=1024), seed=3)
    engine = Engine(model, bundle, max_batch=4, admission="static")
    long = _ask("Tell me a long story.", max_new_tokens=30, min_new_tokens=30, temperature=0)
    short = _ask("Hi", max_new_tokens=4, min_new_tokens=4, temperature=0)
    _, finished = _drive(engine, [engine.submit(long)], submit_after=(5, lambda: engine.submit(short)))
    assert finished == [30, 34]


def test_freed_rows_are_reused_and_rows_match_solo(tiny_engine):
    """More requests than rows (max_batch 4): each waits for a free row and still equals its solo run."""
    # Greedy, or sampling among a few tokens: a random model's near-flat distribution over the whole
    # vocabulary would let float rounding of a different batch shape move an inverse-CDF draw.
    requests = [_ask(f"Question number {i}?", max_new_tokens=3 + 5 * (i % 3), temperature=0.8 * (i % 2), top_k=20, seed=i) for i in range(9)]
    together = tiny_engine.generate(requests)
    alone = [tiny_engine.generate([r])[0] for r in requests]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]


def test_streamed_pieces_join_to_the_reply(tiny_engine):
    """The listener's pieces are the final text, cut before a stop string and never mid-character."""
    full = tiny_engine.generate([_ask("Go on.", max_new_tokens=40, temperature=1.0, seed=7)])[0]
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    for request in (_ask("Go on.", max_new_tokens=40, temperature=1.0, seed=7), _ask("Go on.", max_new_tokens=40, temperature=1.0, seed=7, stop=[stop])):
        pieces, finals = [], []
        ticket = tiny_engine.submit(request, lambda i, text, done: (pieces.append(text), finals.append(done)))
        _drive(tiny_engine, [ticket])
        completion = ticket.wait(0)[0]
        assert "".join(pieces) == completion.text
        assert all("\ufffd" not in p for p in pieces[:-1])
        assert [f is not None for f in finals] == [False] * (len(finals) - 1) + [True]
    assert completion.finish_reason == "stop" and stop not in completion.text


def test_cancelled_request_frees_its_row(tiny_engine):
    ticket = tiny_engine.submit(_ask("Talk.", max_new_tokens=200, min_new_tokens=200, temperature=0))
    for _ in range(3):
        tiny_engine.step()
    assert tiny_engine.counts()["running"] == 1
    ticket.cancel()
    tiny_engine.step()
    assert tiny_engine.counts()["running"] == 0 and ticket.done
    with pytest.raises(DittoError, match="cancelled"):
        ticket.wait(0)


def test_constrained_and_free_rows_share_a_running_batch(tiny_engine):
    """A grammar-constrained request joins mid-run: its output is one of the choices, the free row is unchanged."""
    free = _ask("Ramble.", max_new_tokens=30, min_new_tokens=30, temperature=0)
    picked = _ask("Pick.", choices=["alpha", "beta gamma"], temperature=1.0, seed=3)
    solo_free = tiny_engine.generate([free])[0]
    tickets, _ = _drive(tiny_engine, [tiny_engine.submit(free)], submit_after=(5, lambda: tiny_engine.submit(picked)))
    assert tickets[0].wait(0)[0].token_ids == solo_free.token_ids
    assert tickets[1].wait(0)[0].text in ("alpha", "beta gamma")
