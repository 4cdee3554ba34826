"""LoRA / QLoRA fine-tuning on a tiny model: exact identity at B = 0, only adapters train,
merged and PEFT exports against transformers / peft, QLoRA learning, adapter dropout,
SIGKILL resume, SIGTERM then a new mesh, sharded against one device, the memory
estimate and one-line refusals.

Runs needing several devices are subprocesses with 8 simulated CPU devices."""
from __future__ import annotations

import json

import numpy as np
import pytest
from train_fixtures import losses, run_cli, write_config, write_tiny_model, write_tiny_shards

import jax
import jax.numpy as jnp

from ditto_jax import lora as lora_lib
from ditto_jax import quant
from ditto_jax.config import ModelConfig, tiny_config
from ditto_jax.model import init_model
from ditto_jax.train.config import load_train_config
from ditto_jax.train.memory import estimate_memory
from ditto_jax.train.run import train
from ditto_native import DittoError

ONE_DEVICE = {"data": 1, "fsdp": 1, "tensor": 1}
ALL = ("q", "k", "v", "o", "gate", "up", "down")
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.1}  # the runs below train with adapter dropout
TOKENS = np.array([[5, 9, 14, 3, 22, 7, 40, 11, 6, 30]], np.int32)


def logits_of(model, tokens=TOKENS):
    positions = jnp.arange(tokens.shape[1])[None]
    return np.asarray(model(jnp.asarray(tokens), positions)[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model = write_tiny_model(root / "model")
    return root, model, write_tiny_shards(root / "shards", model, train_rows=12, heldout_rows=4, seq_len=32)


def config(root, model, shards, name, lora, **keys):
    base = dict(model=str(model), data=str(shards), out=str(root / name), steps=3, global_batch=4, micro_batch=2, lr=1e-2,
                warmup_ratio=0.0, save_every=1, compute_dtype="float32", attention="dense", mesh=ONE_DEVICE, lora=lora)
    return write_config(root / f"{name}.toml", **{**base, **keys})


def test_zero_b_is_the_base_exactly():
    cfg = tiny_config()
    base = logits_of(init_model(cfg, seed=3))
    adapted = lora_lib.attach(init_model(cfg, seed=3), lora_lib.LoRASpec(8, 16.0, ALL), seed=1)
    assert np.array_equal(logits_of(adapted), base)
    a = adapted.layers.wq_a_ldr[...]
    assert a.shape == (2, 64, 8) and float(jnp.abs(a).max()) > 0 and adapted.layers.wq_b_lrh[...].shape == (2, 8, 64)


def test_quantizers_round_trip():
    w = jax.random.normal(jax.random.key(0), (2, 128, 64)) * 0.02
    codes, scales = quant.quantize(w, "int8")
    assert codes.dtype == jnp.int8 and scales.shape == (2, 64)
    assert float(jnp.abs(quant.dequantize(codes, scales, "int8") - w).max()) <= float(scales.max()) / 2 + 1e-9
    codes, scales = quant.quantize(w, "nf4")
    assert codes.dtype == jnp.uint8 and codes.shape == (2, 128, 32) and scales.shape == (2, 2, 64)
    back = quant.dequantize(codes, scales, "nf4")
    # Every value lands on its nearest NF4 level: the error is under half the widest gap times the block absmax.
    rep = jnp.repeat(scales, quant.NF4_BLOCK, axis=-2)
    assert bool(jnp.all(jnp.abs(back - w) <= rep * (1 - 0.6961928009986877) / 2 + 1e-7))
    assert float(jnp.corrcoef(back.ravel(), w.ravel())[0, 1]) > 0.99


def test_only_adapters_change_and_the_base_is_bit_identical():
    from ditto_jax.train.config import TrainConfig
    from ditto_jax.train.step import init_state, make_optimizer, make_train_step

    model = lora_lib.attach(init_model(tiny_config(), seed=0), lora_lib.LoRASpec(4, 8.0, ALL, "int8"))
    graphdef, adapters, frozen = lora_lib.split(model)
    assert all(k.rsplit("_", 2)[-2] in ("a", "b") for k in adapters["layers"])  # only adapters are trained
    tx, schedule = make_optimizer(TrainConfig(steps=3, lr=1e-2, warmup_ratio=0.0), 3)
    state = {**init_state(adapters, tx), "frozen": frozen}
    n_adapters = sum(x.size for x in jax.tree.leaves(adapters))
    assert sum(np.size(x) for x in jax.tree.leaves(state["opt_state"])) <= 2 * n_adapters + 8  # no base in the optimizer
    before = jax.tree.map(np.asarray, state)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 200, (1, 2, 16)).astype(np.int32)
    batch = {"input_ids": ids, "loss_mask": np.ones_like(ids, np.uint8), "segment_ids": np.ones_like(ids),
             "positions": np.broadcast_to(np.arange(16, dtype=np.int32), ids.shape).copy()}
    step = make_train_step(graphdef, tx, schedule)
    for _ in range(3):
        state, metrics = step(state, batch)
    for path, old in jax.tree_util.tree_leaves_with_path(before["frozen"]):
        new = np.asarray(_at(state["frozen"], path))
        assert new.dtype == old.dtype and np.array_equal(new, old), path
    assert not np.array_equal(np.asarray(state["params"]["layers"]["wq_b_lrh"]), before["params"]["layers"]["wq_b_lrh"])
    assert not np.array_equal(np.asarray(state["params"]["layers"]["w_down_a_lfr"]), before["params"]["layers"]["w_down_a_lfr"])


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


@pytest.fixture(scope="module")
def lora_run(tiny):
    """A rank-4 LoRA run with dropout, straight, then exported merged (hf) and as a PEFT adapter."""
    root, model, shards = tiny
    cfg = config(root, model, shards, "run", LORA)
    summary = train(load_train_config(cfg), progress=False)
    assert summary.step == 3
    return root, model, shards, root / "run"


def adapted_jax_model(run_dir, base_dir):
    """The adapted model, adapters applied on the fly (not merged), from the run's newest checkpoint."""
    from ditto_jax.loader import load_model
    from ditto_jax.train.run_dir import step_dir_of

    spec, adapters, _, _ = lora_lib.load_adapters(step_dir_of(run_dir))
    model, _ = load_model(str(base_dir))
    lora_lib.attach(model, spec)
    for name, value in adapters["layers"].items():
        getattr(model.layers, name)[...] = value
    return model


def test_checkpoint_holds_adapters_and_a_base_reference(lora_run):
    root, model_dir, _, run = lora_run
    step = run / "checkpoints" / "3"
    record = json.loads((step / "model" / "lora.json").read_text())
    assert record["rank"] == 4 and record["base"]["model"] == str(model_dir.resolve())
    assert record["base"]["sha256"] == lora_lib.sha256_files(sorted(model_dir.glob("*.safetensors")))
    _, adapters, _, _ = lora_lib.load_adapters(step)
    assert sorted(adapters["layers"]) == sorted(n for t in ALL for n in lora_lib.adapter_names(lora_lib.TARGETS[t][0]))
    size = sum(f.stat().st_size for f in (step / "params").rglob("*") if f.is_file())
    base_size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    assert size < base_size / 2  # adapters, not a copy of the base
    # --model RUN applies the adapters: the loader's (merged) model matches the on-the-fly one.
    from ditto_jax.loader import load_model

    merged, _ = load_model(str(run))
    np.testing.assert_allclose(logits_of(merged), logits_of(adapted_jax_model(run, model_dir)), atol=1e-5)
    assert not np.allclose(logits_of(merged), logits_of(load_model(str(model_dir))[0]), atol=1e-4)  # it did train


# peft 0.21 reads a property transformers 5 deprecated.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_merged_and_peft_exports_match(lora_run, tmp_path):
    import peft
    import torch
    import transformers

    root, model_dir, _, run = lora_run
    from ditto_jax.export import export_model

    merged_dir = export_model(str(run), tmp_path / "merged")
    peft_dir = export_model(str(run), tmp_path / "peft", fmt="peft")
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

    jax_logits = logits_of(adapted_jax_model(run, model_dir))
    hf = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        merged_logits = hf(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    assert np.abs(merged_logits - jax_logits).max() < 1e-4

    base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(base, peft_dir).eval()
    names = {n for n, _ in adapted.named_parameters() if "lora_A" in n}
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_A.default.weight" in names  # our names were all taken up
    assert len(names) == 2 * len(ALL)
    with torch.no_grad():
        peft_logits = adapted(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()
    assert np.abs(peft_logits - merged_logits).max() < 1e-3


def test_resume_after_sigkill_gives_identical_adapters(lora_run):
    root, model, shards, straight = lora_run
    cfg = config(root, model, shards, "killed", LORA)  # dropout masks too must be drawn again identically
    first = run_cli(["train", "--config", str(cfg)], DITTO_TEST_KILL_AFTER_SAVE="2")
    assert first.returncode == -9, first.stderr
    second = run_cli(["train", "--config", str(cfg)])
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stderr and "(step 2," in second.stderr
    assert losses(root / "killed") == losses(straight)
    want = lora_lib.load_adapters(straight / "checkpoints" / "3")[1]["layers"]
    got = lora_lib.load_adapters(root / "killed" / "checkpoints" / "3")[1]["layers"]
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def test_qlora_nf4_lowers_the_heldout_loss(tiny):
    root, model, shards = tiny
    cfg = config(root, model, shards, "qlora", {"rank": 8, "alpha": 16.0, "quantize_base": "nf4"}, steps=12, eval_every=2,
                 save_every=100, lr=2e-2)
    train(load_train_config(cfg), progress=False)
    heldout = losses(root / "qlora", "heldout_loss")
    assert heldout[12] < heldout[2] - 0.05, heldout


def test_memory_estimate_covers_lora():
    cfg = tiny_config()
    full = estimate_memory(cfg, seq_len=32, micro_batch=1)
    spec = lora_lib.LoRASpec(4, 8.0, ALL)
    n = lora_lib.adapter_params(cfg, spec)
    assert n == 2 * 4 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)
    lora = estimate_memory(cfg, seq_len=32, micro_batch=1, lora_params=n)
    nf4 = estimate_memory(cfg, seq_len=32, micro_batch=1, lora_params=n, quantize_base="nf4")
    assert lora.grads == n * 4 and lora.optimizer == 2 * n * 4 and full.optimizer == 2 * cfg.num_params() * 4
    assert lora.params == (cfg.num_params() + n) * 4
    matrices = 2 * (64 * 16 * 12 + 3 * 64 * 128)
    assert lora.params - nf4.params == pytest.approx(matrices * (4 - 0.5 - 4 / 64), abs=1)
    # Dropout without remat keeps each adapter's dropped input (float32) and its mask (1 byte) per layer.
    dropped = lora_lib.dropout_inputs(cfg, spec)
    assert dropped == 3 * 64 + 64 + 2 * 64 + 128
    drop = estimate_memory(cfg, seq_len=32, micro_batch=1, lora_params=n, lora_dropout_inputs=dropped)
    assert drop.activations - lora.activations == pytest.approx(2 * 32 * dropped * 5, abs=1)
    assert drop.workspace > lora.workspace and drop.params == lora.params and drop.optimizer == lora.optimizer
    remat = dict(seq_len=32, micro_batch=1, lora_params=n, remat="full")
    assert estimate_memory(cfg, **remat, lora_dropout_inputs=dropped).activations == estimate_memory(cfg, **remat).activations


def test_seven_b_rank_16_fits_one_80gb_gpu_in_bf16():
    llama7b = ModelConfig(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                          num_heads=32, num_kv_heads=32, head_dim=128, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=False, qkv_bias=False, qk_norm=False, max_position_embeddings=4096)
    n = lora_lib.adapter_params(llama7b, lora_lib.LoRASpec(16, 32.0, ALL))
    est = estimate_memory(llama7b, seq_len=4096, micro_batch=1, param_dtype="bfloat16", compute_dtype="bfloat16",
                          remat="full", attention="chunked", lora_params=n)
    assert est.total < 0.9 * 80e9, est.describe()
    full = estimate_memory(llama7b, seq_len=4096, micro_batch=1, param_dtype="bfloat16", compute_dtype="bfloat16",
                           remat="full", attention="chunked")
    assert full.total > 80e9  # full AdamW fine-tuning does not fit


def test_bad_lora_input_is_one_line(tiny, tmp_path):
    root, model, shards = tiny
    with pytest.raises(DittoError, match=r"^config: lora.targets has unknown target 'qkv'") as err:
        load_train_config(config(tmp_path, model, shards, "bad", {"rank": 4}), ["lora.targets=q,qkv"])
    assert "\n" not in str(err.value)
    big = load_train_config(config(tmp_path, model, shards, "big", {"rank": 100, "targets": ["k"]}))
    with pytest.raises(DittoError, match=r"lora.rank 100 is larger than the k projection's width 32") as err:
        train(big, progress=False)
    assert "\n" not in str(err.value)
    for bad in ("1.0", "-0.1"):
        with pytest.raises(DittoError, match=rf"^config: lora.dropout must be in \[0, 1\), got {bad}$"):
            load_train_config(config(tmp_path, model, shards, "d", {"rank": 4}), [f"lora.dropout={bad}"])
    with pytest.raises(DittoError, match=r"^config: lora.dropout needs lora.rank > 0"):
        load_train_config(config(tmp_path, model, shards, "d0", {}), ["lora.dropout=0.1"])
    with pytest.raises(DittoError, match="lora.quantize_base must be one of"):
        load_train_config(config(tmp_path, model, shards, "q", {"rank": 4, "quantize_base": "int3"}))
    result = run_cli(["train", "--config", str(config(tmp_path, model, shards, "cli", {"rank": 4})), "--set", "lora.targets=q,zz"])
    assert result.returncode != 0 and result.stderr.strip().count("\n") == 0 and "unknown target 'zz'" in result.stderr


# ---- adapter dropout -----------------------------------------------------------------------------


def _batch(shape, seed=0):
    ids = np.random.default_rng(seed).integers(4, 200, shape).astype(np.int32)
    return {"input_ids": ids, "loss_mask": np.ones_like(ids, np.uint8), "segment_ids": np.ones_like(ids),
            "positions": np.broadcast_to(np.arange(shape[-1], dtype=np.int32), ids.shape).copy()}


def test_dropout_masks_are_per_row_per_adapter_and_scaled():
    from ditto_jax.model import _dropout
    from ditto_jax.train.step import dropout_row_keys

    keys = dropout_row_keys(7, jnp.int32(3), jnp.int32(0), 4)
    x = jnp.ones((4, 16, 64), jnp.float32)
    q = np.asarray(_dropout(x, keys, jnp.float32(0.25), "wq_ldh"))
    assert set(np.unique(q)) == {0.0, np.float32(1 / 0.75)}  # inverted dropout: kept inputs scaled by 1 / (1 - p)
    assert 0.2 < (q == 0).mean() < 0.3
    assert not np.array_equal(q, np.asarray(_dropout(x, keys, jnp.float32(0.25), "wk_ldk")))  # each adapter its own mask
    assert not np.array_equal(q[0], q[1])  # each row its own mask
    # A row's mask depends on its index in the global batch only, not on the micro-batch it lands in.
    later = dropout_row_keys(7, jnp.int32(3), jnp.int32(2), 2)
    np.testing.assert_array_equal(np.asarray(_dropout(x[:2], later, jnp.float32(0.25), "wq_ldh")), q[2:])
    other_step = np.asarray(_dropout(x, dropout_row_keys(7, jnp.int32(4), jnp.int32(0), 4), jnp.float32(0.25), "wq_ldh"))
    assert not np.array_equal(q, other_step)


def test_dropout_changes_training_steps_but_never_evaluation():
    from ditto_jax.train.config import TrainConfig
    from ditto_jax.train.step import init_state, make_eval_step, make_optimizer, make_train_step

    model = lora_lib.attach(init_model(tiny_config(), seed=0), lora_lib.LoRASpec(4, 8.0, ALL), seed=0)
    graphdef, adapters, frozen = lora_lib.split(model)
    tx, schedule = make_optimizer(TrainConfig(steps=2, lr=1e-2, warmup_ratio=0.0), 2)
    batch = _batch((2, 2, 16))

    def fresh(params):  # the train step donates its state
        return {**init_state(jax.tree.map(jnp.copy, params), tx), "frozen": jax.tree.map(jnp.copy, frozen)}

    steps, runs = {}, {}
    for rate in (0.0, 0.3):
        steps[rate] = make_train_step(graphdef, tx, schedule, lora_dropout=rate, seed=1)
        state, m1 = steps[rate](fresh(adapters), batch)
        trained = jax.tree.map(jnp.copy, state["params"])
        _, m2 = steps[rate](state, batch)
        runs[rate] = (float(m1["loss"]), float(m1["grad_norm"]), float(m2["loss"]), trained)
    # With B = 0 the adapter branch adds nothing, dropped or not: the base path is untouched, the loss equal...
    assert runs[0.3][0] == runs[0.0][0]
    # ...but B's gradient sees the dropped inputs, and so does every loss after the first update.
    assert abs(runs[0.3][1] - runs[0.0][1]) > 1e-3 and abs(runs[0.3][2] - runs[0.0][2]) > 1e-4

    # Evaluation never drops: with trained (non-zero) adapters it is deterministic and equals the
    # no-dropout forward pass, the loss a rate-0 step reports from the same adapters.
    trained = runs[0.3][3]
    evaluate = make_eval_step(graphdef)
    rows = {k: v.reshape(4, 16) for k, v in batch.items()}
    once, again = (jax.device_get(evaluate((trained, frozen), rows)) for _ in range(2))
    assert once[0] == again[0] and once[1] == again[1] == 4 * 15
    _, m = steps[0.0](fresh(trained), batch)
    assert float(once[0] / once[1]) == pytest.approx(float(m["loss"]), abs=1e-5)  # float32 sums in another order
    _, m = steps[0.3](fresh(trained), batch)
    assert abs(float(once[0] / once[1]) - float(m["loss"])) > 1e-4  # while a training step does drop


def test_heldout_loss_of_a_dropout_run_is_the_merged_models(lora_run):
    """The run's reported held-out loss is its checkpoint's, evaluated without any dropout."""
    from flax import nnx

    from ditto_jax.loader import load_model
    from ditto_jax.sharding import make_mesh
    from ditto_jax.train.data import open_shards
    from ditto_jax.train.run import heldout_loss
    from ditto_jax.train.step import make_eval_step

    _, _, shards, run = lora_run
    merged, _ = load_model(str(run))
    graphdef, params = nnx.split(merged)
    got = heldout_loss(make_eval_step(graphdef), params, open_shards(str(shards)), make_mesh(ONE_DEVICE), per_pass=2)
    assert got == pytest.approx(losses(run, "heldout_loss")[3], abs=1e-5)


# ---- LoRA on a mesh: sharded against one device, SIGTERM then a new mesh ----------------------------------------

MESH_STEPS = 4


def mesh_config(root, model, shards, name, mesh, **keys):
    """LoRA with dropout, remat and chunked attention, 8 rows per update of 1-row micro-batches."""
    base = dict(steps=MESH_STEPS, global_batch=8, micro_batch=1, lr=5e-3, warmup_ratio=0.25, eval_every=2, save_every=2,
                attention="chunked", remat="full", mesh=mesh)
    return config(root, model, shards, name, LORA, **{**base, **keys})


def train_cli(cfg, *sets, **env):
    args = ["train", "--config", str(cfg), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    return run_cli(args, devices=8, **env)


def final_adapters(run_dir):
    return {k: np.asarray(v) for k, v in lora_lib.load_adapters(run_dir / "checkpoints" / str(MESH_STEPS))[1]["layers"].items()}


@pytest.fixture(scope="module")
def lora_sharded(tiny):
    """A straight LoRA run on data=2, fsdp=2, tensor=2 (8 devices)."""
    root, model, shards = tiny
    result = train_cli(mesh_config(root, model, shards, "sharded", {"data": 2, "fsdp": 2, "tensor": 2}))
    assert result.returncode == 0, result.stderr
    return root / "sharded"


def test_lora_sharded_run_equals_single_device(tiny, lora_sharded):
    root, model, shards = tiny
    train(load_train_config(mesh_config(root, model, shards, "single", ONE_DEVICE)), progress=False)
    single, sharded = losses(root / "single"), losses(lora_sharded)
    assert sorted(single) == list(range(1, MESH_STEPS + 1))
    for step in single:
        assert single[step] == pytest.approx(sharded[step], abs=1e-5), step
    held_single, held_sharded = losses(root / "single", "heldout_loss"), losses(lora_sharded, "heldout_loss")
    assert sorted(held_single) == [2, 4]
    for step in held_single:
        assert held_single[step] == pytest.approx(held_sharded[step], abs=1e-5), step
    want, got = final_adapters(lora_sharded), final_adapters(root / "single")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=key)
    assert np.abs(want["wq_b_lrh"]).max() > 1e-3  # B moved off zero


def test_lora_sigterm_saves_then_a_new_mesh_continues(tiny, lora_sharded):
    """SIGTERM after step 2 on data=8 leaves checkpoint 2 and exits 0; fsdp=4 x tensor=2 resumes it."""
    root, model, shards = tiny
    cfg = mesh_config(root, model, shards, "remesh", {"data": 8, "fsdp": 1, "tensor": 1}, save_every=100)
    first = train_cli(cfg, DITTO_TEST_SIGTERM_AFTER_STEP="2")
    assert first.returncode == 0, first.stderr
    assert "stopped by SIGTERM after step 2" in first.stderr
    assert sorted(p.name for p in (root / "remesh" / "checkpoints").iterdir()) == ["2"]
    second = train_cli(cfg, "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
    assert second.returncode == 0, second.stderr
    assert "(step 2," in second.stderr and "mesh data=1 fsdp=4 tensor=2" in second.stderr
    got, want = losses(root / "remesh"), losses(lora_sharded)
    assert sorted(got) == list(range(1, MESH_STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(want[step], abs=1e-5), step
    assert losses(root / "remesh", "heldout_loss")[4] == pytest.approx(losses(lora_sharded, "heldout_loss")[4], abs=1e-5)
    want, got = final_adapters(lora_sharded), final_adapters(root / "remesh")
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=key)
