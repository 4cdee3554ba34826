"""The trainer's typed config: TOML + dotted --set overrides, shipped configs, one-line errors."""
from __future__ import annotations

import pytest

from ditto_jax.train.config import (
    MeshConfig, TrainConfig, accumulation_steps, config_from_dict, load_train_config, parse_override, resolve_mesh_shape,
    shipped_configs, total_steps,
)
from ditto_native import DittoError


def test_shipped_configs_load_by_name():
    assert {"cpu-demo", "ditto-paper"} <= set(shipped_configs())
    paper = load_train_config("ditto-paper")
    assert (paper.lr, paper.min_lr_ratio, paper.warmup_ratio, paper.global_batch, paper.seq_len, paper.steps) == (2e-6, 0.1, 0.1, 128, 8192, 300)
    demo = load_train_config("cpu-demo")
    assert demo.model == "smollm2" and demo.remat == "full" and demo.compute_dtype == "float32"


def test_dotted_overrides_are_typed(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('steps = 5\nmodel = "m"\n[mesh]\nfsdp = 2\n')
    cfg = load_train_config(path, ["mesh.tensor=4", "lr=3e-4", "out=runs/a", "epochs=1.5", "steps=none", "remat=\"full\""])
    assert cfg.mesh == MeshConfig(data=1, fsdp=2, tensor=4)
    assert cfg.lr == 3e-4 and cfg.out == "runs/a" and cfg.epochs == 1.5 and cfg.steps is None and cfg.remat == "full"
    assert parse_override("lr=1") == ("lr", 1)
    # An int where a float is expected is accepted and becomes a float.
    assert isinstance(load_train_config(path, ["lr=1"]).lr, float)


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = load_train_config("ditto-paper", ["mesh.fsdp=4", "mesh.data=-1", "model=some/dir \"quoted\""])
    path = tmp_path / "resolved.toml"
    path.write_text(cfg.to_toml())
    assert load_train_config(path) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lerning_rate=1"], "unknown key lerning_rate"),
        (["mesh.pipeline=2"], "unknown key mesh.pipeline"),
        (["steps=many"], "steps must be int, got 'many'"),
        (["lr=true"], "lr must be float, got True"),
        (["remat=sometimes"], "remat must be one of none, full, save-matmuls"),
        (["global_batch=10", "micro_batch=4"], "global_batch (10) is not divisible by micro_batch (4)"),
        (["mesh.data=-1", "mesh.fsdp=-1"], "mesh may use -1"),
        (["mesh.tensor=0"], "mesh.tensor must be -1 or >= 1"),
        (["steps=none"], "steps or epochs must be set"),
        (["warmup_ratio=1"], "warmup_ratio must be in [0, 1)"),
        (["mesh=4"], "mesh must be a table"),
    ],
)
def test_bad_keys_are_one_line_errors_naming_the_key(overrides, message):
    with pytest.raises(DittoError) as err:
        load_train_config("cpu-demo", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(DittoError, match="shipped: cpu-demo, ditto-paper"):
        load_train_config("no-such-config")


def test_mesh_rest_and_batch_divisibility():
    assert resolve_mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert resolve_mesh_shape(MeshConfig(data=1, fsdp=1, tensor=1), 1) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(DittoError, match="uses 4 devices but 8 are present"):
        resolve_mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(DittoError, match="mesh.fsdp=-1 cannot fill 8 devices"):
        resolve_mesh_shape(MeshConfig(data=3, fsdp=-1, tensor=1), 8)
    cfg = config_from_dict({"steps": 1, "global_batch": 16, "micro_batch": 2})
    assert accumulation_steps(cfg, 4) == 2
    with pytest.raises(DittoError, match=r"global_batch \(16\) is not divisible by micro_batch \(2\) x data-parallel size \(3"):
        accumulation_steps(cfg, 3)


def test_defaults_are_valid():
    cfg = TrainConfig(steps=1)
    assert cfg.compute_dtype == "auto" and cfg.mesh.fsdp == -1


def test_steps_win_over_epochs():
    assert total_steps(config_from_dict({"epochs": 2.0, "global_batch": 8}), 20) == 5  # 40 rows / 8, rounded up
    assert total_steps(config_from_dict({"epochs": 0.1, "global_batch": 8}), 20) == 1
    assert total_steps(config_from_dict({"epochs": 2.0, "steps": 3, "global_batch": 8}), 20) == 3
