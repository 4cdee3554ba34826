"""FLOPs per token, peaks, MFU and the per-device memory estimate."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from ditto_jax.config import ModelConfig, tiny_config
from ditto_jax.model import init_model
from ditto_jax.train.flops import (
    attention_flops_per_token, cpu_matmul_peak_flops, flops_per_token, known_peak_tflops, matmul_params, mfu, peak_flops,
)
from ditto_jax.train.loss import lm_loss_sums
from ditto_jax.train.memory import GIB, check_fits, estimate_memory, fits
from ditto_native import DittoError

SMOLLM2 = ModelConfig(  # SmolLM2-135M's config.json, spelled out
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
)


def test_smollm2_flops_per_token_by_hand():
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536  # q and o; k and v (3 kv heads x 64); gate, up, down
    assert per_layer == 3_538_944
    assert matmul_params(SMOLLM2) == 30 * per_layer + 576 * 49152 == 134_479_872
    assert SMOLLM2.num_params() == 134_515_008  # the published 135M: matmuls plus 61 norm vectors
    # Causal attention at 512: per layer 2 matmuls x 2 FLOPs x 9 heads x 64 x 513 / 2 keys on average, x 3 for training.
    assert attention_flops_per_token(SMOLLM2, 512) == 3 * 30 * 2 * 9 * 64 * 513 == 53_187_840
    assert flops_per_token(SMOLLM2, 512) == 6 * 134_479_872 + 53_187_840
    assert flops_per_token(SMOLLM2, 512, training=False) == 2 * 134_479_872 + 53_187_840 / 3


def test_flops_per_token_against_xla_cost_analysis():
    """XLA's own count for a compiled training gradient (dense attention computes the full T x T, twice the causal half).

    One layer: XLA's cost analysis counts a loop body once, and the layers are a scan.
    """
    cfg = tiny_config(num_layers=1, hidden_size=256, intermediate_size=512, num_heads=4, num_kv_heads=2, head_dim=64, vocab_size=2048)
    b, t = 2, 64
    model = init_model(cfg)
    graphdef, params = nnx.split(model)
    ids = jnp.zeros((b, t), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    ones = jnp.ones((b, t), jnp.int32)

    def loss(p):
        m = nnx.merge(graphdef, p)
        return lm_loss_sums(m.hidden_states(ids, pos, ones), m.head_dv(), ids, ones, ones)[0]

    xla = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()["flops"]
    ours = b * t * (flops_per_token(cfg, t) + attention_flops_per_token(cfg, t) * (t / (t + 1)))  # full, not causal
    assert 0.95 < xla / ours < 1.2, xla / ours  # the rest is elementwise work (norms, softmax, RoPE)


def test_known_peaks_and_mfu():
    assert known_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert known_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert known_peak_tflops("NVIDIA H200") == 989.0
    assert known_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert known_peak_tflops("TPU v4") == 275.0
    assert known_peak_tflops("TPU v5 lite") == 197.0
    assert known_peak_tflops("TPU v5p") == 459.0
    assert known_peak_tflops("TPU v6 lite") == 918.0
    assert known_peak_tflops("Some NPU") is None
    assert peak_flops(peak_tflops=100.0) == (100e12, "config peak_tflops")
    assert mfu(1000.0, 1e9, 1e12) == pytest.approx(1.0)
    assert mfu(1000.0, 1e9, 1e12, devices=4) == pytest.approx(0.25)
    assert mfu(1000.0, 1e9, 0.0) == 0.0


def test_cpu_probe_measures_a_plausible_peak():
    flops = cpu_matmul_peak_flops(size=256, repeats=3)
    assert 1e8 < flops < 1e13  # between a slow core and a large server, in FLOP/s


# ---- memory -------------------------------------------------------------------------------------


def smollm2_estimate(**kw):
    base = dict(seq_len=2048, micro_batch=1, remat="none", attention="chunked")
    base.update(kw)
    return estimate_memory(SMOLLM2, **base)


def test_states_sizes():
    est = smollm2_estimate()
    n = SMOLLM2.num_params()
    assert est.params == n * 4 and est.grads == n * 4 and est.optimizer == 2 * n * 4  # f32 weights, AdamW's two moments
    sharded = smollm2_estimate(param_shards=4)
    assert sharded.params == n  # a quarter each
    assert sharded.optimizer == 2 * n
    bf16 = smollm2_estimate(param_dtype="bfloat16")
    assert bf16.params == 2 * n and bf16.optimizer == 8 * n  # moments stay f32
    assert smollm2_estimate(grad_accum=True).grads == 2 * n * 4  # plus an f32 accumulator


@pytest.mark.parametrize("remat", ["none", "full", "save-matmuls"])
@pytest.mark.parametrize("attention", ["dense", "chunked"])
def test_memory_grows_with_sequence_length(remat, attention):
    totals = [smollm2_estimate(seq_len=t, remat=remat, attention=attention).total for t in (512, 1024, 2048, 4096, 8192)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


@pytest.mark.parametrize("remat", ["none", "full", "save-matmuls"])
def test_chunked_needs_less_than_dense(remat):
    for t in (1024, 4096, 8192):
        dense = smollm2_estimate(seq_len=t, remat=remat, attention="dense")
        chunked = smollm2_estimate(seq_len=t, remat=remat, attention="chunked")
        assert chunked.activations <= dense.activations
        if t >= 4096:  # at 1024 a loss chunk's logits can be the larger transient for both
            assert chunked.activations + chunked.workspace < dense.activations + dense.workspace
    # Dense grows with T^2: doubling 4096 -> 8192 more than doubles its activations and workspace.
    d4, d8 = (smollm2_estimate(seq_len=t, remat=remat, attention="dense") for t in (4096, 8192))
    assert d8.activations + d8.workspace > 2.5 * (d4.activations + d4.workspace)


def test_remat_order():
    none, dots, full = (smollm2_estimate(remat=r).activations for r in ("none", "save-matmuls", "full"))
    assert full < dots < none


def test_issue_target_and_fit_check():
    """The issue's CPU target: SmolLM2 trains 8,192 tokens with chunked attention and full remat in 10 GiB."""
    chunked = smollm2_estimate(seq_len=8192, remat="full", attention="chunked")
    dense = smollm2_estimate(seq_len=8192, remat="none", attention="dense")
    assert fits(chunked, 10 * GIB) and not fits(dense, 10 * GIB)
    assert fits(dense, None)  # unknown capacity: no refusal
    check_fits(chunked, 10 * GIB)
    with pytest.raises(DittoError) as err:
        check_fits(dense, 10 * GIB)
    message = str(err.value)
    assert "\n" not in message and "does not fit" in message and "10.00 GiB" in message
    with pytest.raises(DittoError, match="remat"):
        smollm2_estimate(remat="sometimes")


def test_estimate_against_xla_memory_analysis():
    """The activation estimate is within a factor of two of what XLA allocates for the compiled gradient."""
    cfg = tiny_config(hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32, vocab_size=1024)
    b, t = 2, 512
    for remat, attention in (("none", "dense"), ("none", "chunked"), ("full", "chunked")):
        model = init_model(cfg, remat=remat == "full", attention=attention)
        graphdef, params = nnx.split(model)
        ids = jnp.zeros((b, t), jnp.int32)
        pos = jnp.broadcast_to(jnp.arange(t), (b, t))
        seg = jnp.ones((b, t), jnp.int32)

        def loss(p):
            m = nnx.merge(graphdef, p)
            return lm_loss_sums(m.hidden_states(ids, pos, seg), m.head_dv(), ids, seg, seg, chunk=128)[0]

        stats = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
        est = estimate_memory(cfg, seq_len=t, micro_batch=b, remat=remat, attention=attention, loss_chunk=128, attention_block=512)
        measured = stats.temp_size_in_bytes
        predicted = est.activations + est.workspace
        assert 0.5 < predicted / measured < 2.0, (remat, attention, predicted, measured)
