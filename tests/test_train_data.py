"""Shard reading for the trainer: manifest checks, the deterministic order, per-process slices."""
from __future__ import annotations

import json

import numpy as np
import pytest
from train_fixtures import tiny_bundle, write_tiny_model, write_tiny_shards

from ditto_jax.config import tiny_config
from ditto_jax.train.data import TrainStream, check_manifest, local_rows, open_shards, train_order
from ditto_native import DittoError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    model = write_tiny_model(root / "model")
    return write_tiny_shards(root / "shards", model, train_rows=21, heldout_rows=3, seq_len=32), model


def test_rows_read_across_files_match_the_parquet(shards):
    import pyarrow.parquet as pq

    path, _ = shards
    s = open_shards(path)
    assert s.train.num_rows == 21 and len(s.train.files) == 3 and s.heldout.num_rows == 3
    table = pq.read_table(s.train.files[2])  # rows 16..20
    want = np.asarray(table.column("input_ids").to_pylist()[3])
    got = s.train.read(np.array([19, 0, 19]))
    np.testing.assert_array_equal(got["input_ids"][0], want)
    np.testing.assert_array_equal(got["input_ids"][2], want)
    assert got["loss_mask"].dtype == np.int32 and got["loss_mask"].shape == (3, 32)


def test_order_is_a_function_of_seed_and_epoch():
    a, b = train_order(50, 7, 0), train_order(50, 7, 0)
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, train_order(50, 7, 1)) and not np.array_equal(a, train_order(50, 8, 0))


def test_stream_crosses_epochs_and_processes_split_the_batch(shards):
    path, _ = shards
    split = open_shards(path).train
    stream = TrainStream(split, seed=3)
    rows = stream.rows_at(np.arange(42))
    np.testing.assert_array_equal(rows[:21], train_order(21, 3, 0))
    np.testing.assert_array_equal(rows[21:], train_order(21, 3, 1))
    # Two processes holding halves of each micro-batch read disjoint rows that cover the batch.
    accum, per_pass = 2, 4
    halves = [local_rows(accum, per_pass, 0, 2), local_rows(accum, per_pass, 2, 4)]
    assert sorted(np.concatenate(halves).tolist()) == list(range(accum * per_pass))
    np.testing.assert_array_equal(halves[0], [0, 1, 4, 5])


def test_manifest_refusals_are_one_line(shards, tmp_path):
    path, model_dir = shards
    manifest = json.loads((path / "manifest.json").read_text())
    bundle = tiny_bundle()
    cfg = tiny_config(vocab_size=256, max_position_embeddings=512)
    check_manifest(manifest, bundle, cfg, path)

    def refused(m, c=cfg, **kw) -> str:
        with pytest.raises(DittoError) as err:
            check_manifest(m, bundle, c, path, **kw)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "tokenizer sha256" in refused({**manifest, "tokenizer": {"name": "other", "sha256": "ab" * 32}})
    assert "another chat template" in refused({**manifest, "chat_template_sha256": "cd" * 32})
    assert "exceeds the model's context (16 tokens)" in refused(manifest, tiny_config(vocab_size=256, max_position_embeddings=16))
    assert "differs from the shards' seq_len 32" in refused(manifest, seq_len=64)

    empty = tmp_path / "no-manifest"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DittoError, match="missing manifest.json"):
        open_shards(empty)
