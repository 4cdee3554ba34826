"""Batched generation: chat requests in, completions out, in order.

How a batch runs:
- Requests are sorted by prompt length and cut into batches of `max_batch`, so
  rows in a batch need little padding.
- Every prompt but its last token is left-padded to a bucketed length P
  (segment 0 on pads; real positions start at 0) and prefilled in chunks into
  per-layer KV buffers of P + N slots, N the bucketed max_new_tokens. Chunks
  that are all padding are skipped.
- Each decode step feeds one token per row (first the prompt's last token, then
  the previous sample), writes slot P + step, and picks the next token on device
  (`sampling.choose_tokens`). The tokens come to the host once per step for EOS,
  stop strings and grammar masks.
- Buckets (batch: powers of two; prompt: powers of two from 16, then multiples
  of 256; new tokens: powers of two from 16) bound the number of compiles; jax.jit
  caches one executable per shape and sampling spec.
- When half the rows of a batch have finished, the live rows are gathered into
  the next smaller batch bucket, so finished rows stop costing work.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ditto_jax.generation import constraints
from ditto_jax.generation.forward import KVBuffers, empty_buffers, forward, prefill_chunk, take_rows, weights_from_model
from ditto_jax.generation.requests import Completion, GenerationRequest
from ditto_jax.generation.sampling import RowParams, SamplingSpec, choose_tokens, seed_key_data
from ditto_jax.model import CausalLM
from ditto_native import DittoError

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # prompt tokens per prefill call: bounds the [B, H, T, S] attention scores
_MIN_STEPS_TO_COMPACT = 16  # a smaller batch pays for its compile only over enough remaining steps


@functools.partial(jax.jit, static_argnames=("cfg", "spec"), donate_argnames=("buffers", "seen_bv"))
def decode_step(weights, buffers: KVBuffers, seen_bv, tokens_b, positions_b, live_b, slot, rows: RowParams, step, bitmask_bw, eos_ids, *, cfg, spec: SamplingSpec):
    """Feed one token per row at cache slot `slot`; return the next token per row and the updated state."""
    logits_bv, buffers = forward(
        cfg, weights, buffers, tokens_b[:, None], positions_b[:, None], live_b[:, None], slot, want_logits=True
    )
    if spec.penalty:
        # The fed token joins the seen set: prompt + generated so far, as HF's input_ids.
        seen_bv = seen_bv.at[jnp.arange(tokens_b.shape[0]), tokens_b].set(True)
    next_b = choose_tokens(logits_bv, rows, step, spec, seen_bv, bitmask_bw, eos_ids)
    return next_b, buffers, seen_bv


def _pow2_at_least(n: int, floor: int = 1) -> int:
    size = floor
    while size < n:
        size *= 2
    return size


def prompt_bucket(n: int) -> int:
    """Padded length for n prefix tokens: 0, powers of two from 16 up to the chunk size, then chunk multiples."""
    if n == 0:
        return 0
    if n <= PREFILL_CHUNK:
        return _pow2_at_least(n, 16)
    return -(-n // PREFILL_CHUNK) * PREFILL_CHUNK


def new_tokens_bucket(n: int) -> int:
    return _pow2_at_least(n, 16)


@dataclasses.dataclass
class _Row:
    """One sample being generated, and its host-side state."""

    index: int  # position in the flat output list
    request: GenerationRequest
    sample_index: int
    prompt_ids: list[int]
    seed: int
    matcher: object | None = None  # llguidance.LLMatcher
    tokens: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    text: str | None = None


class Engine:
    """Batched generation with KV cache, sampling and grammar constraints.

    >>> engine = Engine(model, bundle, max_batch=16)
    >>> [c.text for c in engine.generate([GenerationRequest([{"role": "user", "content": "Hi"}], temperature=0)])]

    `generate` returns one Completion per request, or `n` consecutive ones for a
    request with `n > 1`. Weights are copied into one array per layer on
    construction (see forward.py for why); `matmul_dtype=jnp.bfloat16` stores
    the matrices in bf16 (float32 accumulation), `cache_dtype` sets the KV
    buffers' dtype (float32 by default). On XLA CPU bf16 weights pay off from
    batch ~8 (SmolLM2, batch 16: 1.3x the float32 tokens/s) but are ~10x slower
    at batch 1, where XLA's bf16 matrix-vector path is poor.

    Not thread-safe: one `generate` call at a time.
    """

    def __init__(
        self, model: CausalLM, tokenizer_bundle, *, max_batch: int = 16, matmul_dtype=None, cache_dtype=None, seed: int | None = None
    ):
        if max_batch < 1:
            raise DittoError(f"max_batch must be >= 1 (got {max_batch})")
        self.cfg = model.cfg
        self.cache_dtype = cache_dtype or jnp.float32
        self.bundle = tokenizer_bundle
        self.max_batch = max_batch
        self.weights = weights_from_model(model, matmul_dtype)
        self._eos = frozenset(int(t) for t in tokenizer_bundle.eos_token_ids)
        self._eos_ids = np.asarray(sorted(self._eos), np.int32)
        self._rng = np.random.default_rng(seed)  # seeds for requests that bring none
        self._lltokenizer = None
        self._mask_writer = None

    # ---- public API ---------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], *, progress: bool = False) -> list[Completion]:
        rows = self._make_rows(requests)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
        with tqdm(total=len(rows), desc="generate", unit="reply", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(order), self.max_batch):
                self._run_batch([rows[i] for i in order[start : start + self.max_batch]], bar)
        return [self._completion(row) for row in rows]

    # ---- setup ----------------------------------------------------------------------------

    def _make_rows(self, requests: Sequence[GenerationRequest]) -> list[_Row]:
        rows: list[_Row] = []
        for i, request in enumerate(requests):
            where = f"request {i}"
            request.check(where)
            prompt = list(self.bundle.encode_chat([dict(m) for m in request.messages], add_generation_prompt=True))
            if not prompt:
                raise DittoError(f"{where}: the prompt encodes to no tokens")
            if len(prompt) > self.cfg.max_position_embeddings:
                raise DittoError(f"{where}: prompt has {len(prompt)} tokens, over the model's {self.cfg.max_position_embeddings}")
            grammar = None
            if request.constrained:
                grammar = constraints.grammar_for(request.json_schema, request.choices)
            seed = int(request.seed) if request.seed is not None else int(self._rng.integers(2**63))
            for j in range(request.n):
                matcher = constraints.new_matcher(self._get_lltokenizer(), grammar, where) if grammar else None
                rows.append(_Row(len(rows), request, j, prompt, seed, matcher))
        return rows

    def _get_lltokenizer(self):
        if self._lltokenizer is None:
            self._lltokenizer = constraints.build_lltokenizer(self.bundle.tokenizer, self.cfg.vocab_size, sorted(self._eos))
            self._mask_writer = constraints.MaskWriter(self.cfg.vocab_size)
        return self._lltokenizer

    def _batch_bucket(self, n: int) -> int:
        return min(_pow2_at_least(n), self.max_batch)

    def _spec(self, rows: list[_Row]) -> SamplingSpec:
        hot = [r.request for r in rows if r.request.temperature > 0]
        max_k = max((int(q.top_k) for q in hot), default=0)
        return SamplingSpec(
            greedy=len(hot) < len(rows),
            sample=bool(hot),
            top_k_cap=min(_pow2_at_least(max_k), self.cfg.vocab_size) if max_k else 0,
            top_p=any(q.top_p < 1 for q in hot),
            penalty=any(r.request.repetition_penalty != 1 for r in rows),
            masked=any(r.matcher is not None for r in rows),
            min_new=any(r.request.min_new_tokens > 0 for r in rows),
        )

    def _row_params(self, rows: list[_Row], batch: int) -> RowParams:
        pad = batch - len(rows)

        def col(values, dtype):
            return np.asarray(list(values) + [values[0]] * pad, dtype)

        reqs = [r.request for r in rows]
        return RowParams(
            temperature=col([float(q.temperature) for q in reqs], np.float32),
            top_p=col([float(q.top_p) for q in reqs], np.float32),
            top_k=col([min(int(q.top_k), self.cfg.vocab_size) for q in reqs], np.int32),
            penalty=col([float(q.repetition_penalty) for q in reqs], np.float32),
            key_data=col([seed_key_data(r.seed) for r in rows], np.uint32),
            sample_index=col([r.sample_index for r in rows], np.int32),
            min_new_tokens=col([int(q.min_new_tokens) for q in reqs], np.int32),
        )

    # ---- the batch loop -------------------------------------------------------------------

    def _run_batch(self, rows: list[_Row], bar) -> None:
        cfg = self.cfg
        batch = self._batch_bucket(len(rows))
        lengths = [len(r.prompt_ids) for r in rows]
        prefix = prompt_bucket(max(lengths) - 1)
        steps = max(r.request.max_new_tokens for r in rows)
        slots = prefix + new_tokens_bucket(steps)

        # Left-pad every prompt but its last token into [batch, prefix].
        tokens = np.full((batch, prefix), self.bundle.pad_token_id, np.int32)
        segments = np.zeros((batch, prefix), np.int32)
        positions = np.zeros((batch, prefix), np.int32)
        for b, row in enumerate(rows):
            k = len(row.prompt_ids) - 1
            if k:
                tokens[b, prefix - k :] = row.prompt_ids[:-1]
                segments[b, prefix - k :] = 1
                positions[b, prefix - k :] = np.arange(k)
        buffers = empty_buffers(cfg, batch, slots, self.cache_dtype)
        chunk = min(prefix, PREFILL_CHUNK)
        for c0 in range(0, prefix, chunk or 1):
            if not segments[:, c0 : c0 + chunk].any():
                continue  # all padding: the buffers already hold zeros marked invalid
            sl = slice(c0, c0 + chunk)
            buffers = prefill_chunk(
                self.weights, buffers, tokens[:, sl], positions[:, sl], segments[:, sl], np.int32(c0), cfg=cfg
            )

        spec = self._spec(rows)
        params = self._row_params(rows, batch)
        seen = None
        if spec.penalty:
            seen = np.zeros((batch, cfg.vocab_size), bool)
            for b, row in enumerate(rows):
                seen[b, row.prompt_ids] = True
        bitmask = self._mask_writer.allocate(batch) if spec.masked else None

        slot_rows: list[_Row | None] = list(rows) + [None] * (batch - len(rows))
        feed = jnp.asarray([r.prompt_ids[-1] for r in rows] + [self.bundle.pad_token_id] * (batch - len(rows)), jnp.int32)
        pos = np.asarray(lengths + [0] * (batch - len(rows)), np.int32) - 1
        for step in range(steps):
            live = np.asarray([r is not None and r.finish_reason is None for r in slot_rows], np.int32)
            if spec.masked:
                self._mask_writer.fill(
                    bitmask, [(r.matcher, b) for b, r in enumerate(slot_rows) if live[b] and r.matcher is not None]
                )
            next_dev, buffers, seen = decode_step(
                self.weights, buffers, seen, feed, np.maximum(pos, 0), live, np.int32(prefix + step), params, np.int32(step), bitmask, self._eos_ids,
                cfg=cfg, spec=spec,
            )
            next_host = np.asarray(next_dev)
            for b, row in enumerate(slot_rows):
                if live[b]:
                    self._accept(row, int(next_host[b]))
                    if row.finish_reason is not None:
                        bar.update(1)
            alive = [b for b, r in enumerate(slot_rows) if r is not None and r.finish_reason is None]
            if not alive:
                break
            feed = next_dev
            pos = pos + 1
            remaining = max(slot_rows[b].request.max_new_tokens for b in alive) - (step + 1)
            smaller = self._batch_bucket(len(alive))
            if smaller < batch and remaining >= _MIN_STEPS_TO_COMPACT:
                keep = np.asarray(alive + [alive[0]] * (smaller - len(alive)), np.int32)
                buffers, seen, params, feed = take_rows((buffers, seen, params, feed), keep)
                pos = pos[keep]
                slot_rows = [slot_rows[b] for b in alive] + [None] * (smaller - len(alive))
                if bitmask is not None:
                    bitmask = np.ascontiguousarray(bitmask[keep])
                batch = smaller

    def _accept(self, row: _Row, token: int) -> None:
        """Record a sampled token and decide whether the row is done."""
        request = row.request
        row.tokens.append(token)
        if token in self._eos:
            row.finish_reason = "stop"
            return
        if row.matcher is not None:
            if not row.matcher.consume_token(token):
                log.warning("constraint rejected token %d (%s); ending the reply", token, row.matcher.get_error())
                row.finish_reason = "stop"
                return
            if row.matcher.is_stopped():
                row.finish_reason = "stop"
                return
        if request.stop:
            text = self.bundle.decode(row.tokens, skip_special_tokens=True)
            hits = [i for i in (text.find(s) for s in request.stop) if i >= 0]
            if hits:
                row.text = text[: min(hits)]
                row.finish_reason = "stop"
                return
        if len(row.tokens) >= request.max_new_tokens:
            row.finish_reason = "length"

    def _completion(self, row: _Row) -> Completion:
        text = row.text
        if text is None:
            body = row.tokens[:-1] if row.tokens and row.tokens[-1] in self._eos else row.tokens
            text = self.bundle.decode(body, skip_special_tokens=True)
        return Completion(
            text=text,
            token_ids=tuple(row.tokens),
            finish_reason=row.finish_reason or "length",
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.tokens),
        )
