"""Device mesh and the one rules table from parameter and activation axes to mesh axes.

The model names every parameter with its dimension letters (`wq_ldh` is
[layers, embed, heads]; see model.py). `LETTER_AXES` turns a letter into a
logical axis and `LOGICAL_RULES` a logical axis into mesh axes, MaxText style:
changing the parallelism changes this table or the mesh, never the model.

    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    shardings = param_shardings(params, mesh)
    with jax.set_mesh(mesh):
        ...  # `constrain(x, ("batch", "seq", "act_embed"))` in the model now shards

A dimension that the mesh axes do not divide evenly stays replicated, so any
model runs on any mesh (at some cost in memory).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Dimension letter of a parameter name -> logical axis.
LETTER_AXES = {
    "l": "layers", "d": "embed", "f": "mlp", "h": "heads", "k": "kv_heads", "e": "head_dim", "v": "vocab",
    "r": "lora_rank",
}

# Logical axis -> mesh axes (None: replicated). Parameters are sharded over fsdp on
# their embed side and over tensor on their head/FFN/vocab side; activations only
# along the batch, which data and fsdp split together.
LOGICAL_RULES: dict[str, tuple[str, ...] | None] = {
    "layers": None,  # scanned over; every device holds its slice of all layers
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": None,
    "lora_rank": None,  # LoRA factors: sharded on their other side, like the matrix they adapt
    "vocab": ("tensor",),
    "batch": ("data", "fsdp"),
    "seq": None,
    "act_embed": None,
}

ACT_BTD = ("batch", "seq", "act_embed")  # the residual stream [B, T, D]


def make_mesh(sizes: Mapping[str, int], devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh; `sizes` must multiply to the device count."""
    shape = tuple(int(sizes[a]) for a in MESH_AXES)
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_spec(logical: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Logical axes of an array -> its PartitionSpec on `mesh`, replicating what does not divide."""
    used: set[str] = set()
    spec: list[Any] = []
    for name, dim in zip(logical, shape):
        axes = LOGICAL_RULES.get(name) if name else None
        axes = tuple(a for a in (axes or ()) if a not in used and mesh.shape[a] > 1)
        if not axes or dim % math.prod(mesh.shape[a] for a in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes if len(axes) > 1 else axes[0])
    return PartitionSpec(*spec)


def param_logical_axes(name: str, ndim: int) -> tuple[str | None, ...]:
    """`wq_ldh` -> ("layers", "embed", "heads"); a name without matching letters stays replicated."""
    letters = name.rsplit("_", 1)[-1]
    if "_" not in name or len(letters) != ndim or any(c not in LETTER_AXES for c in letters):
        return (None,) * ndim
    return tuple(LETTER_AXES[c] for c in letters)


def tree_shardings(tree, mesh: Mesh):
    """NamedShardings for a parameter-shaped tree (or an optimizer state holding such trees).

    Each leaf's rule comes from the last dictionary key on its path, the parameter
    name; leaves without one (step counters) are replicated.
    """

    def one(path, leaf):
        name = next((str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), "")
        shape = tuple(np.shape(leaf))
        return NamedSharding(mesh, logical_spec(param_logical_axes(name, len(shape)), shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int) -> NamedSharding:
    """Rows split over (data, fsdp) along `batch_axis`; every other axis replicated."""
    spec = [None] * ndim
    spec[batch_axis] = LOGICAL_RULES["batch"]
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """Pin an activation's sharding by logical axes; does nothing outside a mesh (`jax.set_mesh`)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec(logical, x.shape, mesh))


def process_rows(sharding: NamedSharding, global_shape: tuple[int, ...], batch_axis: int) -> tuple[int, int]:
    """The [lo, hi) range along `batch_axis` that this process's devices hold."""
    spans = [idx[batch_axis].indices(global_shape[batch_axis]) for idx in sharding.addressable_devices_indices_map(global_shape).values()]
    # One process's devices sit side by side on meshes from `make_mesh`, so its rows are one range.
    return min(s[0] for s in spans), max(s[1] for s in spans)


def host_to_global(local: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...], batch_axis: int, lo: int) -> jax.Array:
    """A global array from this process's rows [lo, lo + len) along `batch_axis`."""

    def piece(index):
        index = list(index)
        start, stop, _ = index[batch_axis].indices(global_shape[batch_axis])
        index[batch_axis] = slice(start - lo, stop - lo)
        return local[tuple(index)]

    return jax.make_array_from_callback(global_shape, sharding, piece)
