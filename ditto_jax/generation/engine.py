"""Continuous-batching generation: chat requests in, completions (and streamed text) out.

The engine holds a batch of B rows over one KV cache of S slots per row
(`forward.KVBuffers`). Slot s of a row holds its token at position s, so rows
sit at different positions and never need padding against each other.

One scheduler iteration (`Engine.step`):
- **Admit.** Waiting requests take free rows (one row per sample: `n` rows for
  `n` samples). The new rows' prompts, all but their last token, are prefilled
  into their own rows of the cache (`forward.prefill_rows`: rows of one prompt
  length bucket in one call, in chunks of up to 256 tokens); the other rows
  are untouched. So a request that arrives while others decode joins the
  batch at the next decode step.
- **Decode.** One step for every live row: feed its last token at its own
  position, choose the next token on device (`sampling.choose_tokens`, with
  per-row parameters and step counts), bring the tokens to the host for EOS,
  stop strings, grammar masks and streamed text.
- **Free.** A finished (or cancelled) row frees its row at once; the next
  iteration can give it to a waiting request. A long generation therefore
  never holds up short ones, which finish and leave while it goes on.
- **Resize.** B grows (powers of two, up to `max_batch`) when more rows are
  live, and shrinks to the live rows' bucket when at most half are live and
  nothing waits. S grows as the rows advance, to the bucket of the furthest
  slot a live row writes next (a step reads all S slots of every layer: on
  SmolLM2 at batch 16 each slot bucket costs ~0.08 ms per slot). When nothing
  is live the cache is dropped.

Static batching (`admission="static"`, for comparison) admits only into an
empty batch, so a batch runs until its last row ends.

Compile bound. jax.jit caches one executable per shape and sampling spec:
- decode step: B in {1, 2, 4, ..., max_batch} x S in {64, 128, 256, ...} (up
  to the longest prompt + reply) x the sampling specs met (7 flags; a spec
  only widens while a batch runs, so in practice a handful);
- prefill: rows R in {1, 2, ..., 64} with R x chunk <= 1,024, chunk length in
  {16, 24, 32, 48, 64, 96, 128, 192, 256}, x the same B x S;
- resize: one per (old shape, new shape) pair of those buckets.
With max_batch 16 and replies within 1,024 slots that is at most 5 x 5 decode
shapes per spec, 5 x 9 x 5 prefill shapes per R, whatever the traffic; a run
meets only the S buckets its rows pass through.

Not thread-safe except `submit` and `Ticket.cancel`: one thread drives `step`
(or `generate`, which drives it until its own requests are done).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import sys
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ditto_jax.generation import constraints
from ditto_jax.generation.forward import KVBuffers, decode_logits, empty_buffers, prefill_rows, resize_buffers, weights_from_model
from ditto_jax.generation.requests import Completion, GenerationRequest
from ditto_jax.generation.sampling import RowParams, SamplingSpec, choose_tokens, seed_key_data
from ditto_jax.model import CausalLM
from ditto_native import DittoError

log = logging.getLogger(__name__)

PREFILL_CHUNK = 256  # prompt tokens per row per prefill call
PREFILL_TOKENS = 1024  # rows x chunk per prefill call: bounds the [R, H, T, S] attention scores
_MIN_SLOTS = 64  # smallest cache length bucket
_MIN_STEPS_TO_COMPACT = 16  # a smaller batch pays for its copy only over enough remaining steps

# listener(sample_index, new_text, completion): called on the engine's thread as text
# becomes final; `completion` is set on the row's last call.
Listener = Callable[[int, str, "Completion | None"], None]


@functools.partial(jax.jit, static_argnames=("cfg", "spec"), donate_argnames=("buffers", "seen_bv"))
def decode_step(weights, buffers: KVBuffers, seen_bv, tokens_b, positions_b, rows: RowParams, steps_b, bitmask_bw, eos_ids, *, cfg, spec: SamplingSpec):
    """Feed one token per row at its own position; return the next token per row and the updated state."""
    logits_bv, buffers = decode_logits(cfg, weights, buffers, tokens_b, positions_b)
    if spec.penalty:
        # The fed token joins the seen set: prompt + generated so far, as HF's input_ids.
        seen_bv = seen_bv.at[jnp.arange(tokens_b.shape[0]), tokens_b].set(True)
    next_b = choose_tokens(logits_bv, rows, steps_b, spec, seen_bv, bitmask_bw, eos_ids)
    return next_b, buffers, seen_bv


def _pow2_at_least(n: int, floor: int = 1) -> int:
    size = floor
    while size < n:
        size *= 2
    return size


def _pow2_at_most(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _two_per_doubling(n: int, floor: int) -> int:
    """The smallest of floor, 1.5 x floor, 2 x floor, 3 x floor, 4 x floor, ... that is >= n."""
    size = _pow2_at_least(n, floor)
    return size * 3 // 4 if size > floor and size * 3 // 4 >= n else size


def prompt_bucket(n: int) -> int:
    """Padded length for n prefix tokens: 0; 16, 24, 32, 48, ... up to the chunk size; then chunk multiples.

    Prefill is compute-bound (~1.1 ms a token for SmolLM2 on 2 cores), so
    padding costs in proportion; two buckets per doubling keep it under a third.
    """
    if n == 0:
        return 0
    if n <= PREFILL_CHUNK:
        return _two_per_doubling(n, 16)
    return -(-n // PREFILL_CHUNK) * PREFILL_CHUNK


def slots_bucket(n: int) -> int:
    """Cache length for rows needing up to n slots: powers of two from 64.

    Every decode step reads the whole cache, so the cache grows with the rows
    (`Engine._grow`) instead of starting at prompt + max_new_tokens. Whole
    doublings keep the shapes a run passes through (and compiles) few.
    """
    return _pow2_at_least(n, _MIN_SLOTS)


def _union(a: SamplingSpec | None, b: SamplingSpec) -> SamplingSpec:
    """A spec serving the rows of both (every processor is a no-op on rows that do not use it)."""
    if a is None:
        return b
    return SamplingSpec(
        greedy=a.greedy or b.greedy, sample=a.sample or b.sample, top_k_cap=max(a.top_k_cap, b.top_k_cap),
        top_p=a.top_p or b.top_p, penalty=a.penalty or b.penalty, min_new=a.min_new or b.min_new, masked=a.masked or b.masked,
    )


class Ticket:
    """A submitted request: its `n` completions when done, and streamed text through its listener."""

    def __init__(self, request: GenerationRequest, listener: Listener | None):
        self.request = request
        self.listener = listener
        self.completions: list[Completion | None] = [None] * request.n
        self.cancelled = False
        self._done = threading.Event()

    def cancel(self) -> None:
        """Stop generating (a client left): the rows are freed at the engine's next step."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> list[Completion]:
        if not self._done.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if self.cancelled or any(c is None for c in self.completions):
            raise DittoError("generation was cancelled")
        return list(self.completions)  # type: ignore[arg-type]


@dataclasses.dataclass
class _Row:
    """One sample being generated, and its host-side state."""

    ticket: Ticket
    sample_index: int
    prompt_ids: list[int]
    seed: int
    matcher: object | None = None  # llguidance.LLMatcher
    tokens: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    text: str | None = None  # the reply cut before a stop string
    streamed: str = ""  # text already handed to the listener

    @property
    def request(self) -> GenerationRequest:
        return self.ticket.request

    @property
    def position(self) -> int:
        """Position (= cache slot) of the token fed at the next step."""
        return len(self.prompt_ids) - 1 + len(self.tokens)


class Engine:
    """Continuous-batching generation with KV cache, sampling and grammar constraints.

    >>> engine = Engine(model, bundle, max_batch=16)
    >>> [c.text for c in engine.generate([GenerationRequest([{"role": "user", "content": "Hi"}], temperature=0)])]

    `generate` returns one Completion per request, or `n` consecutive ones for a
    request with `n > 1`. A server instead calls `submit` from any thread and
    drives `step` from one. Weights are copied into one array per layer on
    construction (see forward.py for why); `matmul_dtype=jnp.bfloat16` stores
    the matrices in bf16 (float32 accumulation), `cache_dtype` sets the KV
    buffers' dtype (float32 by default). On XLA CPU bf16 weights pay off from
    batch ~8 (SmolLM2, batch 16: 1.3x the float32 tokens/s) but are ~10x slower
    at batch 1, where XLA's bf16 matrix-vector path is poor.
    """

    def __init__(
        self, model: CausalLM, tokenizer_bundle, *, max_batch: int = 16, matmul_dtype=None, cache_dtype=None,
        seed: int | None = None, admission: str = "continuous",
    ):
        if max_batch < 1:
            raise DittoError(f"max_batch must be >= 1 (got {max_batch})")
        if admission not in ("continuous", "static"):
            raise DittoError(f"admission must be continuous or static (got {admission!r})")
        self.cfg = model.cfg
        self.cache_dtype = cache_dtype or jnp.float32
        self.bundle = tokenizer_bundle
        self.max_batch = max_batch
        self.admission = admission
        self.weights = weights_from_model(model, matmul_dtype)
        self._eos = frozenset(int(t) for t in tokenizer_bundle.eos_token_ids)
        self._eos_ids = np.asarray(sorted(self._eos), np.int32)
        self._rng = np.random.default_rng(seed)  # seeds for requests that bring none
        self._lltokenizer = None
        self._mask_writer = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._inbox: collections.deque[Ticket] = collections.deque()
        self._tickets: dict[int, list[_Row]] = {}  # id(ticket) -> its rows, set at submit
        self._waiting: collections.deque[_Row] = collections.deque()
        self._slots: list[_Row | None] = []
        self._buffers: KVBuffers | None = None
        self._seen = None  # [B, V] bool on device, when the spec has a penalty
        self._bitmask: np.ndarray | None = None
        self._spec: SamplingSpec | None = None
        # Counters (read by serve's /health and by tests).
        self.decode_steps = 0
        self.runs = 0  # busy periods: from admitting into an empty batch to the batch emptying
        self.finished_requests = 0
        # Test hook: called on the engine thread after every decode step with the live rows' count.
        self.step_hooks: list[Callable[[int], None]] = []

    # ---- public API ---------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], *, progress: bool = False) -> list[Completion]:
        """Run the requests to completion (driving `step` on this thread); completions in request order."""
        prepared = [(request, self._prepare(request, f"request {i}")) for i, request in enumerate(requests)]
        tickets = [self._enqueue(request, rows, None) for request, rows in prepared]
        total = sum(request.n for request in requests)
        with tqdm(total=total, desc="generate", unit="reply", disable=not progress, file=sys.stderr) as bar:
            done = 0
            while not all(t.done for t in tickets):
                self.step()
                now = sum(c is not None for t in tickets for c in t.completions)
                bar.update(now - done)
                done = now
        return [c for t in tickets for c in t.wait(0)]

    def submit(self, request: GenerationRequest, listener: Listener | None = None, *, where: str = "request") -> Ticket:
        """Queue a request (thread-safe); it joins the batch at the next step. Raises DittoError when it is bad."""
        return self._enqueue(request, self._prepare(request, where), listener)

    def has_work(self) -> bool:
        return bool(self._inbox or self._waiting or any(r is not None for r in self._slots))

    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Block until a request is queued (or `timeout`); True when there is work."""
        with self._arrived:
            if not self.has_work():
                self._arrived.wait(timeout)
        return self.has_work()

    def counts(self) -> dict[str, int]:
        live = sum(r is not None for r in self._slots)
        return {"running": live, "waiting": len(self._waiting) + len(self._inbox), "batch_rows": len(self._slots),
                "decode_steps": self.decode_steps, "runs": self.runs, "finished_requests": self.finished_requests}

    def step(self) -> None:
        """One scheduler iteration: admit waiting requests, run one decode step, free finished rows."""
        self._take_inbox()
        self._drop_cancelled()
        self._admit()
        if not any(r is not None for r in self._slots):
            self._release()
            return
        self._compact()
        self._grow()
        self._decode()
        if not self.has_work():
            self._release()  # idle: give the cache's memory back now

    def fail_all(self, error: BaseException) -> None:
        """End every queued and running request (after an engine bug) and drop the cache."""
        self._take_inbox()
        rows = list(self._waiting) + [r for r in self._slots if r is not None]
        self._waiting.clear()
        self._slots = [None] * len(self._slots)
        self._release()
        for ticket in {id(r.ticket): r.ticket for r in rows}.values():
            ticket.cancelled = True
            ticket._done.set()
            if ticket.listener is not None:
                ticket.listener(-1, "", None)  # tells a streaming client that no more text comes
        log.error("generation failed; %d request(s) ended: %s", len(rows), error)

    # ---- requests -> rows -----------------------------------------------------------------

    def _prepare(self, request: GenerationRequest, where: str) -> list[_Row]:
        """Check and encode a request; its rows (not yet tied to a ticket). Raises DittoError."""
        request.check(where)
        prompt = list(self.bundle.encode_chat([dict(m) for m in request.messages], add_generation_prompt=True))
        if not prompt:
            raise DittoError(f"{where}: the prompt encodes to no tokens")
        if len(prompt) > self.cfg.max_position_embeddings:
            raise DittoError(f"{where}: prompt has {len(prompt)} tokens, over the model's {self.cfg.max_position_embeddings}")
        grammar = constraints.grammar_for(request.json_schema, request.choices) if request.constrained else None
        with self._lock:
            seed = int(request.seed) if request.seed is not None else int(self._rng.integers(2**63))
        rows = []
        for j in range(request.n):
            matcher = constraints.new_matcher(self._get_lltokenizer(), grammar, where) if grammar else None
            rows.append(_Row(None, j, prompt, seed, matcher))  # type: ignore[arg-type]
        return rows

    def _enqueue(self, request: GenerationRequest, rows: list[_Row], listener: Listener | None) -> Ticket:
        ticket = Ticket(request, listener)
        for row in rows:
            row.ticket = ticket
        with self._arrived:
            self._tickets[id(ticket)] = rows
            self._inbox.append(ticket)
            self._arrived.notify_all()
        return ticket

    def _get_lltokenizer(self):
        with self._lock:
            if self._lltokenizer is None:
                self._lltokenizer = constraints.build_lltokenizer(self.bundle.tokenizer, self.cfg.vocab_size, sorted(self._eos))
                self._mask_writer = constraints.MaskWriter(self.cfg.vocab_size)
            return self._lltokenizer

    def _take_inbox(self) -> None:
        with self._lock:
            while self._inbox:
                ticket = self._inbox.popleft()
                self._waiting.extend(self._tickets.pop(id(ticket)))

    def _drop_cancelled(self) -> None:
        for ticket in {id(r.ticket): r.ticket for r in self._waiting if r.ticket.cancelled}.values():
            ticket._done.set()
        self._waiting = collections.deque(r for r in self._waiting if not r.ticket.cancelled)
        for b, row in enumerate(self._slots):
            if row is not None and row.ticket.cancelled:
                self._slots[b] = None
                row.ticket._done.set()

    # ---- batch shape ----------------------------------------------------------------------

    def _batch_bucket(self, n: int) -> int:
        return min(_pow2_at_least(n), self.max_batch)

    @staticmethod
    def _slots_needed(row: _Row) -> int:
        """Slots the row needs for its next step: its prefill (padding included) or the slot it writes next.

        The cache grows as rows advance (`_grow`) rather than holding every
        row's prompt + max_new_tokens from the start: a decode step's cost grows
        with the cache length, and most replies end well before their cap.
        """
        if not row.tokens:
            return max(len(row.prompt_ids), prompt_bucket(len(row.prompt_ids) - 1))
        return row.position + 1

    def _admit(self) -> None:
        live = [r for r in self._slots if r is not None]
        if not self._waiting or (self.admission == "static" and live):
            return
        room = self.max_batch - len(live)
        if room <= 0:
            return
        admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if not live:
            self.runs += 1
        rows_needed = self._batch_bucket(len(live) + len(admitted))
        slots_needed = slots_bucket(max(self._slots_needed(r) for r in live + admitted))
        if self._buffers is None:
            self._buffers = empty_buffers(self.cfg, rows_needed, slots_needed, self.cache_dtype)
            self._slots = [None] * rows_needed
        else:
            batch, slots = self._buffers.shape
            if rows_needed > batch or slots_needed > slots:
                keep = list(range(batch)) + [0] * (max(batch, rows_needed) - batch)
                self._reshape(keep, max(slots, slots_needed))
        self._spec = _union(self._spec, self._spec_for(admitted))
        placed = []
        for row in admitted:
            b = self._slots.index(None)
            self._slots[b] = row
            placed.append((b, row))
        self._prefill(placed)
        self._refresh_host_state()

    def _grow(self) -> None:
        """Lengthen the cache when a live row's next slot is past its end."""
        batch, slots = self._buffers.shape
        need = max(self._slots_needed(r) for r in self._slots if r is not None)
        if need > slots:
            self._reshape(list(range(batch)), slots_bucket(need))

    def _compact(self) -> None:
        """Gather the live rows into a smaller batch when at most half the rows are live and nothing waits."""
        alive = [b for b, r in enumerate(self._slots) if r is not None]
        smaller = self._batch_bucket(len(alive))
        if self._waiting or smaller >= len(self._slots):
            return
        remaining = max(self._slots[b].request.max_new_tokens - len(self._slots[b].tokens) for b in alive)
        if remaining < _MIN_STEPS_TO_COMPACT:
            return
        self._reshape(alive + [alive[0]] * (smaller - len(alive)), self._buffers.shape[1], live=len(alive))
        self._refresh_host_state()

    def _reshape(self, keep: list[int], slots: int, *, live: int | None = None) -> None:
        """Rebuild the cache with row i = old row keep[i]; rows past `live` (default: past the old batch) are free."""
        old = self._slots
        self._buffers = resize_buffers(self._buffers, np.asarray(keep, np.int32), slots=slots)
        live = len(old) if live is None else live
        self._slots = [old[k] if i < live else None for i, k in enumerate(keep)]

    def _refresh_host_state(self) -> None:
        """Rebuild the penalty's seen set and the grammar bitmask for the current rows (after admit or reshape)."""
        batch = len(self._slots)
        if self._spec.penalty:
            seen = np.zeros((batch, self.cfg.vocab_size), bool)
            for b, row in enumerate(self._slots):
                if row is not None:
                    seen[b, row.prompt_ids] = True
                    seen[b, row.tokens] = True
            self._seen = jnp.asarray(seen)
        if self._spec.masked:
            self._get_lltokenizer()
            self._bitmask = self._mask_writer.allocate(batch)  # all allowed; constrained rows are filled each step

    def _release(self) -> None:
        self._buffers = None
        self._seen = None
        self._bitmask = None
        self._spec = None
        self._slots = []

    def _spec_for(self, rows: list[_Row]) -> SamplingSpec:
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

    # ---- prefill and decode ---------------------------------------------------------------

    def _prefill(self, placed: list[tuple[int, _Row]]) -> None:
        """Write all but each prompt's last token into its row's slots [0, len - 1).

        Rows whose prompts share a length bucket go through one call (up to
        PREFILL_TOKENS tokens): on CPU a 16-token prefill costs 3.8 ms a token and
        a 256-token one 1.1 ms, so batching the rows is what makes admission cheap.
        """
        groups: dict[int, list[tuple[int, _Row]]] = collections.defaultdict(list)
        for b, row in placed:
            groups[prompt_bucket(len(row.prompt_ids) - 1)].append((b, row))
        for padded, members in sorted(groups.items()):
            if padded == 0:
                continue
            chunk = min(padded, PREFILL_CHUNK)
            per_call = _pow2_at_most(max(1, PREFILL_TOKENS // chunk))
            for i in range(0, len(members), per_call):
                part = members[i : i + per_call]
                size = _pow2_at_least(len(part))
                rows_r = np.full(size, part[0][0], np.int32)  # padding rows repeat the first (see prefill_rows)
                tokens = np.full((size, padded), self.bundle.pad_token_id, np.int32)
                for j, (b, row) in enumerate(part):
                    rows_r[j] = b
                    tokens[j, : len(row.prompt_ids) - 1] = row.prompt_ids[:-1]
                tokens[len(part) :] = tokens[0]
                longest = max(len(row.prompt_ids) - 1 for _, row in part)
                for c0 in range(0, longest, chunk):
                    self._buffers = prefill_rows(
                        self.weights, self._buffers, rows_r, tokens[:, c0 : c0 + chunk], np.int32(c0), cfg=self.cfg
                    )

    def _row_params(self) -> RowParams:
        def col(get, default, dtype):
            return np.asarray([default if r is None else get(r) for r in self._slots], dtype)

        vocab = self.cfg.vocab_size
        return RowParams(
            temperature=col(lambda r: float(r.request.temperature), 0.0, np.float32),
            top_p=col(lambda r: float(r.request.top_p), 1.0, np.float32),
            top_k=col(lambda r: min(int(r.request.top_k), vocab), 0, np.int32),
            penalty=col(lambda r: float(r.request.repetition_penalty), 1.0, np.float32),
            key_data=col(lambda r: seed_key_data(r.seed), (0, 0), np.uint32),
            sample_index=col(lambda r: r.sample_index, 0, np.int32),
            min_new_tokens=col(lambda r: int(r.request.min_new_tokens), 0, np.int32),
        )

    def _decode(self) -> None:
        slots = self._slots
        live = [b for b, r in enumerate(slots) if r is not None]
        feed = np.full(len(slots), self.bundle.pad_token_id, np.int32)
        positions = np.zeros(len(slots), np.int32)
        steps = np.zeros(len(slots), np.int32)
        for b in live:
            row = slots[b]
            feed[b] = row.tokens[-1] if row.tokens else row.prompt_ids[-1]
            positions[b] = row.position
            steps[b] = len(row.tokens)
        if self._spec.masked:
            self._mask_writer.fill(self._bitmask, [(slots[b].matcher, b) for b in live if slots[b].matcher is not None])
        next_dev, self._buffers, self._seen = decode_step(
            self.weights, self._buffers, self._seen, feed, positions, self._row_params(), steps, self._bitmask, self._eos_ids,
            cfg=self.cfg, spec=self._spec,
        )
        next_host = np.asarray(next_dev)
        self.decode_steps += 1
        for hook in self.step_hooks:
            hook(len(live))
        for b in live:
            row = slots[b]
            self._accept(row, int(next_host[b]))
            listener = row.ticket.listener
            delta = self._new_text(row) if listener is not None else ""
            if row.finish_reason is not None:
                slots[b] = None  # free the row at once: the next step can admit into it
                self._finish(row, delta)
            elif delta:
                listener(row.sample_index, delta, None)

    # ---- host-side row logic --------------------------------------------------------------

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

    def _final_text(self, row: _Row) -> str:
        if row.text is not None:
            return row.text
        body = row.tokens[:-1] if row.tokens and row.tokens[-1] in self._eos else row.tokens
        return self.bundle.decode(body, skip_special_tokens=True)

    def _new_text(self, row: _Row) -> str:
        """The text that has become final since the listener's last call.

        Incremental detokenisation: decode the whole reply so far and send what
        grew past the text already sent, holding back a trailing U+FFFD (a
        multi-byte character whose bytes have not all arrived) and any tail that
        could still become a stop string. The finished reply flushes the rest.
        """
        if row.finish_reason is not None:
            text = self._final_text(row)
        else:
            text = self.bundle.decode(row.tokens, skip_special_tokens=True).rstrip("\ufffd")
            held = max((k for s in row.request.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[: len(text) - held]
        if not text.startswith(row.streamed):
            if row.finish_reason is not None:
                log.warning("streamed text is not a prefix of the final reply; the stream ends short")
            return ""
        delta = text[len(row.streamed) :]
        row.streamed = text
        return delta

    def _finish(self, row: _Row, delta: str) -> None:
        completion = Completion(
            text=self._final_text(row),
            token_ids=tuple(row.tokens),
            finish_reason=row.finish_reason or "length",
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.tokens),
        )
        ticket = row.ticket
        ticket.completions[row.sample_index] = completion
        if ticket.listener is not None:
            ticket.listener(row.sample_index, delta, completion)
        if all(c is not None for c in ticket.completions):
            self.finished_requests += 1
            ticket._done.set()
