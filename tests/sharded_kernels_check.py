"""Run by tests/test_attention.py in a process with 8 simulated CPU devices: the chunked attention and
chunked loss on a (data=2, fsdp=2, tensor=2) mesh against the same computation on one device.

Prints one JSON line: the loss on each side and the largest gradient difference.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ditto_jax.attention import attend, splash_attention
from ditto_jax.config import tiny_config
from ditto_jax.model import init_model
from ditto_jax.sharding import batch_sharding, make_mesh, tree_shardings
from ditto_jax.train.loss import lm_loss_sums


def main() -> None:
    assert jax.device_count() == 8, jax.device_count()
    cfg = tiny_config()
    model = init_model(cfg, seed=4, attention="chunked", remat="full")
    graphdef, params = nnx.split(model)
    rng = np.random.RandomState(0)
    b, t = 4, 40
    seg = np.zeros((b, t), np.int32)
    seg[0, :15], seg[0, 15:37] = 1, 2
    seg[1, :] = 1
    seg[2, 4:30] = 3
    seg[3, :20], seg[3, 20:] = 1, 2
    pos = np.zeros_like(seg)
    for r in range(b):
        for i in range(1, t):
            pos[r, i] = pos[r, i - 1] + 1 if seg[r, i] == seg[r, i - 1] else 0
    batch = {
        "input_ids": rng.randint(0, cfg.vocab_size, (b, t)).astype(np.int32),
        "positions": pos,
        "segment_ids": seg,
        "loss_mask": (rng.rand(b, t) < 0.7).astype(np.int32),
    }

    def loss(p, batch):
        m = nnx.merge(graphdef, p)
        hidden = m.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"])
        total, count = lm_loss_sums(hidden, m.head_dv(), batch["input_ids"], batch["segment_ids"], batch["loss_mask"], chunk=16)
        return total / count

    grad_fn = jax.value_and_grad(loss)
    single_loss, single_grads = jax.jit(grad_fn)(params, batch)

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    p_sharding = tree_shardings(params, mesh)
    b_sharding = {k: batch_sharding(mesh, 2, 0) for k in batch}
    with jax.set_mesh(mesh):
        sharded = jax.jit(grad_fn, in_shardings=(p_sharding, b_sharding))
        params_s = jax.device_put(params, p_sharding)
        batch_s = {k: jax.device_put(v, b_sharding[k]) for k, v in batch.items()}
        sharded_loss, sharded_grads = sharded(params_s, batch_s)
    spread = max(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(sharded_grads))
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(single_grads), jax.tree.leaves(sharded_grads)))
    scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(single_grads))
    print(json.dumps({"single": float(single_loss), "sharded": float(sharded_loss), "grad_diff": diff, "grad_scale": scale,
                      "devices": spread, "splash_diff": splash_sharded(mesh)}))


def splash_sharded(mesh) -> float:
    """Splash (Pallas interpreter) inside shard_map on the mesh: largest difference from dense on real rows."""
    rng = np.random.RandomState(1)
    b, t = 4, 130
    seg = np.zeros((b, t), np.int32)
    seg[0, :60], seg[0, 60:125] = 1, 2
    seg[1:, :] = 1
    q = rng.randn(b, t, 4, 16).astype(np.float32)
    k, v = (rng.randn(b, t, 2, 16).astype(np.float32) for _ in range(2))
    dense = attend(q, k, v, seg, impl="dense")
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh):
        fn = jax.jit(lambda q, k, v, s: splash_attention(q, k, v, s, block=128, interpret=True))
        out = fn(*(jax.device_put(x, rows) for x in (q, k, v, seg)))
    return float(np.abs(np.asarray(out) - np.asarray(dense))[seg != 0].max())


if __name__ == "__main__":
    main()
