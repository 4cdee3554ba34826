"""`ditto-jax train` on one device, in process: accumulation, memorising a small set,
real SmolLM2 weights on `ditto-data tokenize` shards, and one-line refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from train_fixtures import losses, run_cli, write_config, write_tiny_model, write_tiny_shards

from ditto_jax.train.config import load_train_config
from ditto_jax.train.run import train

ONE_DEVICE = {"data": 1, "fsdp": 1, "tensor": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    model = write_tiny_model(root / "model")
    return root, model, write_tiny_shards(root / "shards", model, train_rows=12, heldout_rows=3, seq_len=32)


def config(root, model, shards, name, **keys):
    base = dict(model=str(model), data=str(shards), out=str(root / name), steps=2, global_batch=4, micro_batch=1, lr=3e-3,
                warmup_ratio=0.0, save_every=100, compute_dtype="float32", attention="dense", mesh=ONE_DEVICE)
    return load_train_config(write_config(root / f"{name}.toml", **{**base, **keys}))


def test_four_micro_batches_of_one_equal_one_of_four(tiny):
    root, model, shards = tiny
    train(config(root, model, shards, "accum4", micro_batch=1), progress=False)
    train(config(root, model, shards, "accum1", micro_batch=4), progress=False)
    a, b = losses(root / "accum4"), losses(root / "accum1")
    assert sorted(a) == [1, 2]
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)
    norms = [losses(root / name, "grad_norm")[1] for name in ("accum4", "accum1")]
    assert norms[0] == pytest.approx(norms[1], rel=1e-5)


def test_tiny_model_memorises_a_small_packed_set(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    shards = write_tiny_shards(tmp_path / "shards", model, train_rows=4, heldout_rows=0, seq_len=32, seed=5)
    cfg = config(tmp_path, model, shards, "overfit", steps=30, micro_batch=4, lr=1e-2, warmup_ratio=0.1, log_every=10)
    summary = train(cfg, progress=False)
    first = losses(tmp_path / "overfit")
    assert summary.loss < 0.1 and first[10] > summary.loss
    assert summary.heldout_loss is None  # empty heldout/: no evaluation


def test_smollm2_steps_lower_the_heldout_loss(tmp_path, smollm2):
    """A few SmolLM2 updates on shards written by `ditto-data tokenize` lower the held-out loss."""
    import jax
    from dialogue_fixtures import make_sessions, write_sessions
    from flax import nnx

    from data_tools.cli import main as data_main
    from ditto_jax.sharding import make_mesh, tree_shardings
    from ditto_jax.train.data import open_shards
    from ditto_jax.train.run import heldout_loss
    from ditto_jax.train.step import make_eval_step

    sessions = write_sessions(tmp_path / "clean.parquet", make_sessions(24, seed=3, turns=2))
    assert data_main(["tokenize", "--in", str(sessions), "--tokenizer", "smollm2", "--seq-len", "256", "--out", str(tmp_path / "shards"),
                      "--heldout-fraction", "0.25", "--overlong", "truncate"]) == 0
    shards = open_shards(tmp_path / "shards")
    assert shards.heldout.num_rows > 0

    model, _ = smollm2
    mesh = make_mesh(ONE_DEVICE)
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    with jax.set_mesh(mesh):
        before = heldout_loss(make_eval_step(graphdef, mesh=mesh, params_sharding=tree_shardings(params, mesh)), params, shards, mesh, 2)

    cfg = load_train_config(write_config(
        tmp_path / "smol.toml", model="smollm2", data=str(tmp_path / "shards"), out=str(tmp_path / "run"), steps=3, global_batch=2,
        micro_batch=2, lr=1e-4, warmup_ratio=0.0, save_every=100, keep=1, compute_dtype="float32", remat="full",
        attention="chunked", mesh=ONE_DEVICE,
    ))
    summary = train(cfg, progress=False)
    assert summary.heldout_loss < before - 0.05, (before, summary.heldout_loss)
    assert np.isfinite(list(losses(tmp_path / "run").values())).all()


def _one_line_error(capsys, argv) -> str:
    from ditto_jax.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ditto-jax train: error: ")
    return err


def test_bad_input_is_one_line(tiny, tmp_path, capsys):
    root, model, shards = tiny
    cfg_path = write_config(tmp_path / "ok.toml", model=str(model), data=str(shards), out=str(tmp_path / "o"), steps=1,
                            global_batch=4, compute_dtype="float32", mesh=ONE_DEVICE)

    err = _one_line_error(capsys, ["train", "--config", str(cfg_path), "--set", "learning_rate=1"])
    assert "unknown key learning_rate" in err

    bare = tmp_path / "bare"
    (bare / "train").mkdir(parents=True)
    err = _one_line_error(capsys, ["train", "--config", str(cfg_path), "--set", f"data={bare}"])
    assert "missing manifest.json" in err and str(bare) in err

    other = write_tiny_shards(tmp_path / "other", model, train_rows=2, heldout_rows=0)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"] = {"name": "SmolLM2-135M-Instruct", "sha256": "0" * 64}
    (other / "manifest.json").write_text(json.dumps(manifest))
    err = _one_line_error(capsys, ["train", "--config", str(cfg_path), "--set", f"data={other}"])
    assert "tokenized with SmolLM2-135M-Instruct" in err

    # global_batch 6 on 4 data-parallel devices: checked before anything compiles.
    result = run_cli(["train", "--config", str(cfg_path), "--set", "global_batch=6", "--set", "mesh.fsdp=-1"], devices=4)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "global_batch (6) is not divisible by micro_batch (1) x data-parallel size (4" in lines[0], result.stderr
