"""The optimizer and the jitted train and evaluation steps.

    tx, schedule = make_optimizer(cfg, total_steps)
    graphdef, params = nnx.split(model)            # model.dtype/remat/attention already set
    state = init_state(params, tx)
    step = make_train_step(graphdef, tx, schedule)  # or with mesh=..., for sharded runs
    state, metrics = step(state, batch)             # batch: {column: [accum, rows, seq]}

The loss of an update is the sum of per-token cross-entropies over every
counted target in the global batch divided by their number, however the rows
are split into micro-batches and devices: micro-batches add loss sums, counts
and gradients of the sum, and the division happens once, at the end. So 4
micro-batches of 1 row give the update 1 micro-batch of 4 gives.

LoRA dropout (`lora_dropout` > 0) is drawn in the train step only: each row's
masks come from (seed, update number, the row's index in the global batch), so
a resumed run draws the same masks as a straight one, and any mesh or split
into micro-batches the same as one device. Evaluation never drops.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ditto_jax.model import AdapterDropout
from ditto_jax.sharding import batch_sharding, replicated, tree_shardings
from ditto_jax.train.config import TrainConfig
from ditto_jax.train.loss import lm_loss_sums

BATCH_COLUMNS = ("input_ids", "loss_mask", "segment_ids", "positions")
DROPOUT_STREAM = 0x64726F70  # folded into the seed for dropout keys, apart from the adapters' initialisation


def lr_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Learning rate of the update numbered `count + 1`: linear warm-up to lr, cosine to lr x min_lr_ratio.

    Optax counts updates from 0; shifting by one makes the first update train
    (lr / warmup instead of 0) and the last one land on the floor.
    """
    warmup = round(cfg.warmup_ratio * total_steps)
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio,
    )
    return lambda count: base(count + 1)


def decay_mask(params):
    """Weight decay on matrices only: a parameter named with two or more non-layer letters."""

    def one(path, _):
        name = str(path[-1].key) if path and isinstance(path[-1], jax.tree_util.DictKey) else ""
        letters = name.rsplit("_", 1)[-1].lstrip("l") if "_" in name else ""
        return "norm" not in name and len(letters) >= 2

    return jax.tree_util.tree_map_with_path(one, params)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = lr_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts), schedule


def init_state(params, tx: optax.GradientTransformation) -> dict[str, Any]:
    """The train state: parameters, optimizer state and the number of updates done."""
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def state_shardings(state, mesh):
    """Parameters and optimizer moments sharded by the rules table; counters replicated."""
    return tree_shardings(state, mesh)


def dropout_row_keys(seed: int, step: jax.Array, first_row: jax.Array, rows: int) -> jax.Array:
    """Keys [rows] for rows first_row .. first_row + rows - 1 of the global batch of update `step` (0-based)."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DROPOUT_STREAM), step)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(first_row + jnp.arange(rows))


def loss_sums(
    graphdef: nnx.GraphDef, params, batch: dict[str, jax.Array], frozen=None, dropout: AdapterDropout | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(sum of target losses, number of counted targets) for rows [B, T].

    With LoRA, `params` are the adapters and `frozen` the base they adapt; `dropout` drops adapter inputs.
    """
    model = nnx.merge(graphdef, params) if frozen is None else nnx.merge(graphdef, params, frozen)
    hidden = model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"], adapter_dropout=dropout)
    return lm_loss_sums(hidden, model.head_dv(), batch["input_ids"], batch["segment_ids"], batch["loss_mask"])


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    mesh=None,
    state_sharding=None,
    lora_dropout: float = 0.0,
    seed: int = 0,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """A jitted `(state, batch) -> (state, metrics)`; the state is donated.

    `batch` holds each column as [accum, rows, seq]; the micro-batches along the
    first axis are scanned. With `mesh`, rows are sharded over (data, fsdp) and
    `state_sharding` (from `state_shardings`) places parameters and moments.
    A LoRA state also holds `frozen`, the base: passed through, never differentiated;
    `lora_dropout` > 0 drops the adapters' inputs, with masks from `seed` (`dropout_row_keys`).
    """

    def grad_sums(params, micro, frozen, dropout):
        def objective(p):
            total, count = loss_sums(graphdef, p, micro, frozen, dropout)
            return total, count

        (total, count), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return total, count, grads

    def step(state, batch):
        params = state["params"]
        frozen = state.get("frozen")

        def accumulate(carry, xs):
            micro, index = xs
            g_sum, l_sum, n_sum = carry
            dropout = None
            if lora_dropout > 0:
                rows = micro["input_ids"].shape[0]
                dropout = AdapterDropout(lora_dropout, dropout_row_keys(seed, state["step"], index * rows, rows))
            # Differentiate the sum, not a mean: the one division by the global count comes last.
            total, count, grads = grad_sums(params, micro, frozen, dropout)
            g_sum = jax.tree.map(lambda a, g: a + g.astype(a.dtype), g_sum, grads)
            return (g_sum, l_sum + total, n_sum + count), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        if state_sharding is not None:
            zeros = jax.lax.with_sharding_constraint(zeros, state_sharding["params"])
        init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        accum = batch["input_ids"].shape[0]
        (g_sum, l_sum, n_sum), _ = jax.lax.scan(accumulate, init, (batch, jnp.arange(accum, dtype=jnp.int32)))
        denom = jnp.maximum(n_sum, 1.0)
        grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), g_sum, params)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {
            "loss": l_sum / denom,
            "grad_norm": optax.global_norm(grads),
            "lr": schedule(state["step"]),
            "targets": n_sum,
        }
        new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}
        return ({**new_state, "frozen": frozen} if frozen is not None else new_state), metrics

    if mesh is None:
        return jax.jit(step, donate_argnums=(0,))
    batch_spec = {c: batch_sharding(mesh, 3, 1) for c in BATCH_COLUMNS}
    # Metrics replicated, so every process can read them.
    return jax.jit(step, in_shardings=(state_sharding, batch_spec), out_shardings=(state_sharding, replicated(mesh)), donate_argnums=(0,))


def make_eval_step(graphdef: nnx.GraphDef, *, mesh=None, params_sharding=None) -> Callable[[Any, dict], tuple[jax.Array, jax.Array]]:
    """A jitted `(params, batch) -> (loss sum, target count)` for rows [rows, seq]."""

    def evaluate(params, batch):
        # LoRA: `params` is the pair (adapters, frozen base).
        return loss_sums(graphdef, params[0], batch, params[1]) if isinstance(params, tuple) else loss_sums(graphdef, params, batch)

    if mesh is None:
        return jax.jit(evaluate)
    batch_spec = {c: batch_sharding(mesh, 2, 0) for c in BATCH_COLUMNS}
    return jax.jit(evaluate, in_shardings=(params_sharding, batch_spec), out_shardings=replicated(mesh))
