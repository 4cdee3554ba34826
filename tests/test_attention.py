"""Every attention implementation against dense attention: values and gradients on packed rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ditto_jax.attention import attend, resolve_impl, splash_attention
from ditto_jax.config import tiny_config
from ditto_jax.model import init_model
from ditto_jax.train.loss import lm_loss_sums
from ditto_native import DittoError

TOL = 1e-5
REPO = Path(__file__).resolve().parents[1]
T = 45


def segments(t: int = T) -> np.ndarray:
    """Rows with several segments, padding at the end or the start, ids out of order, one row all padding."""
    seg = np.zeros((4, t), np.int32)
    seg[0, :10], seg[0, 10:30], seg[0, 30:t - 3] = 1, 2, 3  # three segments, then padding
    seg[1, :] = 1  # one segment filling the row
    seg[2, 5:22], seg[2, 22:] = 9, 4  # padding first; ids need not increase
    return seg  # row 3: all padding


def qkv(heads: int, kv_heads: int, t: int = T, e: int = 8, seed: int = 0):
    rng = np.random.RandomState(seed)
    # Scaled up so the softmax is far from uniform and the online rescaling matters.
    q = rng.randn(4, t, heads, e).astype(np.float32) * 2.0
    k = rng.randn(4, t, kv_heads, e).astype(np.float32) * 2.0
    v = rng.randn(4, t, kv_heads, e).astype(np.float32)
    return q, k, v


def weighted_sum(impl, block, seg):
    """A scalar of the outputs on real rows only: padding queries' outputs are unspecified."""
    real = jnp.asarray(seg != 0)[:, :, None, None]
    cot = jnp.asarray(np.random.RandomState(5).randn(*seg.shape, 1, 1).astype(np.float32))

    def f(q, k, v):
        out = attend(q, k, v, seg, impl=impl, block=block)
        return jnp.sum(jnp.where(real, out * cot, 0.0))

    return f


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 4), (3, 1)])
@pytest.mark.parametrize("block", [8, 16, 64])
def test_chunked_matches_dense(heads, kv_heads, block):
    seg = segments()
    q, k, v = qkv(heads, kv_heads)
    dense = jax.jit(lambda q, k, v: attend(q, k, v, seg, impl="dense"))(q, k, v)
    chunked = jax.jit(lambda q, k, v: attend(q, k, v, seg, impl="chunked", block=block))(q, k, v)
    assert chunked.shape == dense.shape == (4, T, heads, 8)
    real = seg != 0
    np.testing.assert_allclose(np.asarray(chunked)[real], np.asarray(dense)[real], atol=TOL, rtol=0)
    assert np.all(np.isfinite(chunked)) and np.all(np.asarray(chunked)[~real] == 0)

    grads_d = jax.jit(jax.grad(weighted_sum("dense", block, seg), argnums=(0, 1, 2)))(q, k, v)
    grads_c = jax.jit(jax.grad(weighted_sum("chunked", block, seg), argnums=(0, 1, 2)))(q, k, v)
    for name, gd, gc in zip("qkv", grads_d, grads_c):
        assert np.abs(gd).max() > 1e-2, name
        np.testing.assert_allclose(gc, gd, atol=TOL, rtol=0, err_msg=f"d{name}")


def test_splash_kernel_matches_dense_in_interpreter():
    """The TPU splash kernel, run by Pallas' interpreter on any backend: our wrapper's padding to
    its 128-token tiles, segment ids, GQA and scaling, checked against dense."""
    t = 130  # pads to 256: two tiles
    seg = segments(t)[:2]
    q, k, v = (x[:2] for x in qkv(4, 2, t=t, e=16))

    def real_sum(fn):
        cot = jnp.asarray(np.random.RandomState(5).randn(2, t, 1, 1).astype(np.float32))
        return lambda q, k, v: jnp.sum(jnp.where(jnp.asarray(seg != 0)[:, :, None, None], fn(q, k, v) * cot, 0.0))

    splash = lambda q, k, v: splash_attention(q, k, v, seg, block=128, interpret=True)  # noqa: E731
    dense = lambda q, k, v: attend(q, k, v, seg, impl="dense")  # noqa: E731
    real = seg != 0
    np.testing.assert_allclose(np.asarray(splash(q, k, v))[real], np.asarray(dense(q, k, v))[real], atol=TOL, rtol=0)
    grads_s = jax.grad(real_sum(splash), argnums=(0, 1, 2))(q, k, v)
    grads_d = jax.grad(real_sum(dense), argnums=(0, 1, 2))(q, k, v)
    for name, gs, gd in zip("qkv", grads_s, grads_d):
        np.testing.assert_allclose(gs, gd, atol=TOL, rtol=0, err_msg=f"d{name}")


@pytest.mark.skipif(jax.default_backend() not in ("tpu", "gpu"), reason="compiled splash needs a TPU, cuDNN a GPU")
def test_accelerator_kernel_matches_dense():
    """On a TPU (splash, compiled) or a GPU (cuDNN, bf16): `auto` picks the fused kernel; values and gradients match dense."""
    seg = segments(256)
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(4, 2, t=256, e=64))
    assert resolve_impl("auto", 256, dtype=jnp.bfloat16) in ("splash", "cudnn")
    real = seg != 0
    fused = jax.jit(lambda q, k, v: attend(q, k, v, seg, impl="auto"))(q, k, v)
    dense = jax.jit(lambda q, k, v: attend(q, k, v, seg, impl="dense"))(q, k, v)
    np.testing.assert_allclose(np.asarray(fused, np.float32)[real], np.asarray(dense, np.float32)[real], atol=2e-2)
    grads_f = jax.jit(jax.grad(weighted_sum("auto", 128, seg), argnums=(0, 1, 2)))(q, k, v)
    grads_d = jax.jit(jax.grad(weighted_sum("dense", 128, seg), argnums=(0, 1, 2)))(q, k, v)
    for gf, gd in zip(grads_f, grads_d):
        np.testing.assert_allclose(np.asarray(gf, np.float32), np.asarray(gd, np.float32), atol=5e-2)


def test_chunked_bfloat16_close_to_dense():
    seg = segments()
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(4, 2))
    dense = attend(q, k, v, seg, impl="dense").astype(jnp.float32)
    chunked = attend(q, k, v, seg, impl="chunked", block=16)
    assert chunked.dtype == jnp.bfloat16
    real = seg != 0
    np.testing.assert_allclose(np.asarray(chunked.astype(jnp.float32))[real], np.asarray(dense)[real], atol=3e-2)


def test_chunked_backward_memory_is_linear_in_length():
    """At T = 2048 one head's dense scores are 16 MiB; the chunked gradient's scratch stays far below."""
    t, block = 2048, 128
    seg = np.ones((1, t), np.int32)
    q, k, v = (jax.ShapeDtypeStruct((1, t, 1, 16), jnp.float32) for _ in range(3))

    def scratch(impl):
        f = jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, seg, impl=impl, block=block)), argnums=(0, 1, 2))
        return jax.jit(f).lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

    scores = t * t * 4
    assert scratch("dense") >= scores
    assert scratch("chunked") < scores / 8


def test_resolve_impl():
    assert resolve_impl("auto", 512, "cpu") == "dense"
    assert resolve_impl("auto", 8192, "cpu") == "chunked"
    assert resolve_impl("auto", 512, "tpu") == "splash"
    assert resolve_impl("chunked", 16, "cpu") == "chunked"
    assert resolve_impl("auto", 8192, "gpu", jnp.bfloat16) == "cudnn"
    assert resolve_impl("auto", 8192, "gpu") == "cudnn"  # no dtype: the trainer's default, bf16 on accelerators
    assert resolve_impl("auto", 8192, "gpu", jnp.float32) == "chunked"  # cuDNN has no float32 kernel
    assert resolve_impl("cudnn", 512, "gpu", jnp.bfloat16) == "cudnn"
    with pytest.raises(DittoError, match="splash needs a TPU"):
        resolve_impl("splash", 512, "cpu")
    with pytest.raises(DittoError, match="cudnn needs a GPU"):
        resolve_impl("cudnn", 512, "cpu")
    with pytest.raises(DittoError, match="bfloat16/float16"):
        resolve_impl("cudnn", 512, "gpu", jnp.float32)
    with pytest.raises(DittoError, match="unknown implementation 'flash'"):
        resolve_impl("flash", 512, "cpu")


# ---- through the model ------------------------------------------------------------------------


def model_batch(cfg, seed=0):
    rng = np.random.RandomState(seed)
    seg = segments(40)[:3]
    ids = rng.randint(0, cfg.vocab_size, seg.shape).astype(np.int32)
    pos = np.zeros_like(seg)
    for b in range(seg.shape[0]):  # positions restart per segment
        for t in range(1, seg.shape[1]):
            pos[b, t] = pos[b, t - 1] + 1 if seg[b, t] == seg[b, t - 1] else 0
    mask = (rng.rand(*seg.shape) < 0.7).astype(np.int32)
    return ids, pos, seg, mask


def test_model_hidden_states_and_head_give_the_logits():
    cfg = tiny_config()
    model = init_model(cfg, seed=1)
    ids, pos, seg, _ = model_batch(cfg)
    logits, cache = model(ids, pos, seg)
    assert cache is None
    split = jnp.einsum("btd,dv->btv", model.hidden_states(ids, pos, seg), model.head_dv(), preferred_element_type=jnp.float32)
    np.testing.assert_array_equal(logits, split)
    assert model.head_dv().shape == (cfg.hidden_size, cfg.vocab_size)
    tied = init_model(tiny_config("qwen2"), seed=1)
    np.testing.assert_array_equal(tied.head_dv(), tied.embed_vd[...].T)


@pytest.mark.parametrize("remat", [False, True])
def test_model_chunked_matches_dense(remat):
    cfg = tiny_config()
    model = init_model(cfg, seed=2, remat=remat)
    ids, pos, seg, mask = model_batch(cfg)
    real = seg != 0
    forward = nnx.jit(lambda m: m(ids, pos, seg)[0])  # the attention choice is static: each retraces
    dense = np.asarray(forward(model))
    model.attention = "chunked"
    chunked = np.asarray(forward(model))
    np.testing.assert_allclose(chunked[real], dense[real], atol=TOL, rtol=0)

    def loss(impl):
        model.attention = impl

        def f(m):
            total, n = lm_loss_sums(m.hidden_states(ids, pos, seg), m.head_dv(), ids, seg, mask, chunk=16)
            return total / n

        return nnx.jit(nnx.grad(f))(model)

    g_dense, g_chunked = nnx.to_flat_state(loss("dense")), nnx.to_flat_state(loss("chunked"))
    for (path, a), (_, b) in zip(g_dense, g_chunked):
        np.testing.assert_allclose(np.asarray(b[...]), np.asarray(a[...]), atol=TOL, rtol=0, err_msg=str(path))


def test_model_rejects_unknown_attention():
    with pytest.raises(DittoError, match="unknown implementation"):
        init_model(tiny_config(), attention="flash")


def test_chunked_kernels_sharded_match_single_device():
    """Chunked attention and loss (custom VJPs, while loops) on a data=2, fsdp=2, tensor=2 mesh of 8
    simulated devices give the single-device loss and gradients; splash, wrapped in shard_map, the dense values."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "sharded_kernels_check.py")], env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert abs(result["sharded"] - result["single"]) <= 1e-5 * abs(result["single"])
    assert result["grad_diff"] <= 1e-5 * result["grad_scale"]
    assert result["splash_diff"] <= TOL  # splash per shard (shard_map), in the Pallas interpreter
