"""`ditto-jax train` end to end on a tiny model: sharding, resume after SIGKILL, SIGTERM,
a corrupt checkpoint, a mesh change and two processes, each against a reference run.

Runs needing several devices are subprocesses with 8 simulated CPU devices (the
pytest process has already fixed its own device count). The reference is one
straight 6-step run on mesh data=2, fsdp=2, tensor=2.
"""
from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
from train_fixtures import losses, run_cli, start_cli, write_config, write_tiny_model, write_tiny_shards

STEPS = 6
MESH_222 = {"data": 2, "fsdp": 2, "tensor": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model = write_tiny_model(root / "model")
    shards = write_tiny_shards(root / "shards", model, train_rows=20, heldout_rows=5, seq_len=32)
    return root, model, shards


def make_config(root, model, shards, out, *, mesh=MESH_222, **keys):
    base = dict(
        model=str(model), data=str(shards), out=str(out), steps=STEPS, global_batch=8, micro_batch=1, lr=3e-3,
        warmup_ratio=0.2, weight_decay=0.01, save_every=3, eval_every=3, keep=3, compute_dtype="float32",
        attention="chunked", remat="full", mesh=mesh,
    )
    base.update(keys)
    return write_config(root / f"{out.name}.toml", **base)


def train_cli(config, *sets, devices=8, **env):
    args = ["train", "--config", str(config), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    return run_cli(args, devices=devices, **env)


def final_params(run_dir):
    import jax

    from ditto_jax.loader import load_model
    from flax import nnx

    model, _ = load_model(str(run_dir))
    return {"/".join(map(str, k)): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]}


@pytest.fixture(scope="module")
def straight(tiny):
    root, model, shards = tiny
    out = root / "straight"
    result = train_cli(make_config(root, model, shards, out))
    assert result.returncode == 0, result.stderr
    return out


def test_straight_run_writes_the_run_directory(straight):
    names = {p.name for p in straight.iterdir()}
    assert {"config.toml", "checkpoints", "metrics.jsonl", "loss.png"} <= names
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["3", "6"]
    step_dir = straight / "checkpoints" / "6"
    assert {"params", "opt_state", "trainer", "model"} <= {p.name for p in step_dir.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in (step_dir / "model").iterdir()}
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "time"} <= set(r)
    assert [r["step"] for r in records if "heldout_loss" in r] == [3, 6]
    assert records[-1]["heldout_loss"] < records[2]["heldout_loss"]  # it learns
    assert records[-1]["lr"] == pytest.approx(3e-3 * 0.1, rel=1e-5)  # the cosine ends on the floor
    assert (straight / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sharded_run_equals_single_device(tiny, straight):
    """data=2, fsdp=2, tensor=2 on 8 devices == one device, over the same 6 updates, within 1e-5."""
    root, model, shards = tiny
    from ditto_jax.train.config import load_train_config
    from ditto_jax.train.run import train

    out = root / "single"
    cfg = load_train_config(make_config(root, model, shards, out, mesh={"data": 1, "fsdp": 1, "tensor": 1}))
    train(cfg, progress=False)
    single, sharded = losses(out), losses(straight)
    assert sorted(single) == list(range(1, STEPS + 1))
    for step in range(1, 4):
        assert single[step] == pytest.approx(sharded[step], abs=1e-5), step
    held_single, held_sharded = losses(out, "heldout_loss"), losses(straight, "heldout_loss")
    assert held_single[6] == pytest.approx(held_sharded[6], abs=1e-5)


def test_resume_after_sigkill_equals_the_straight_run(tiny, straight):
    root, model, shards = tiny
    out = root / "killed"
    config = make_config(root, model, shards, out)
    first = train_cli(config, DITTO_TEST_KILL_AFTER_SAVE="3")
    assert first.returncode == -9, first.stderr  # really killed, right after checkpoint 3
    assert sorted(losses(out)) == [1, 2, 3]
    second = train_cli(config)
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stderr and "(step 3," in second.stderr
    assert losses(out) == losses(straight)  # identical, not just close
    want, got = final_params(straight), final_params(out)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    # A corrupt newest checkpoint: one warning line, then resume from the one before.
    for f in (out / "checkpoints" / "6" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")
    again = train_cli(config)
    assert again.returncode == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning: checkpoint 6 is unreadable")]
    assert len(warnings) == 1 and "trying checkpoint 3" in warnings[0]
    assert "(step 3," in again.stderr
    assert (out / "checkpoints" / "6.corrupt").is_dir() and (out / "checkpoints" / "6" / "params").is_dir()
    assert losses(out) == losses(straight)  # steps 4-6 retrained identically; the last record wins


def test_sigterm_saves_then_a_new_mesh_continues(tiny, straight):
    """SIGTERM after step 3 on data=8 leaves checkpoint 3 and exits 0; fsdp=4 x tensor=2 resumes it."""
    root, model, shards = tiny
    out = root / "remesh"
    config = make_config(root, model, shards, out, mesh={"data": 8, "fsdp": 1, "tensor": 1}, save_every=100)
    first = train_cli(config, DITTO_TEST_SIGTERM_AFTER_STEP="3")
    assert first.returncode == 0, first.stderr
    assert "stopped by SIGTERM after step 3" in first.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3"]
    second = train_cli(config, "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
    assert second.returncode == 0, second.stderr
    assert "(step 3," in second.stderr and "mesh data=1 fsdp=4 tensor=2" in second.stderr
    got, want = losses(out), losses(straight)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(want[step], abs=1e-5), step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tiny, straight):
    """Two jax.distributed processes on localhost (4 CPU devices each, gloo) == the one-process run."""
    root, model, shards = tiny
    out = root / "two"
    config = make_config(root, model, shards, out)
    port = _free_port()
    procs = [
        start_cli(["train", "--config", str(config), "--no-progress", "--coordinator", f"127.0.0.1:{port}",
                   "--num-processes", "2", "--process-id", str(i)], devices=4)
        for i in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=600))
        except Exception:
            for q in procs:
                q.kill()
            raise
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    got, want = losses(out), losses(straight)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in got:
        assert got[step] == pytest.approx(want[step], abs=1e-5), step
    assert losses(out, "heldout_loss")[6] == pytest.approx(losses(straight, "heldout_loss")[6], abs=1e-5)


def test_checkpoint_is_a_model_for_generate(straight):
    """`ditto-jax generate --model OUT` answers from the trained weights (the newest step)."""
    from ditto_jax.generation import Engine, GenerationRequest
    from ditto_jax.loader import load_model, resolve_model_ref

    assert resolve_model_ref(str(straight)).path == straight / "checkpoints" / "6"
    model, bundle = load_model(str(straight))
    prompt = "hello captain, where is the ship?"
    want = Engine(model, bundle, max_batch=1).generate(
        [GenerationRequest([{"role": "user", "content": prompt}], max_new_tokens=6, temperature=0)]
    )[0].text
    result = run_cli(["generate", "--model", str(straight), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "6"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == want + "\n"
    step3 = run_cli(["generate", "--model", str(straight / "checkpoints" / "3"), "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", "6"])
    assert step3.returncode == 0, step3.stderr


def test_continue_from_a_checkpoint_as_model(tiny, straight):
    """A finished run's checkpoint is a valid `model` for a new run (fresh optimizer, same weights)."""
    from ditto_jax.train.config import load_train_config
    from ditto_jax.train.run import train

    root, _, shards = tiny
    out = root / "continued"
    cfg = load_train_config(make_config(root, straight, shards, out, mesh={"data": 1, "fsdp": 1, "tensor": 1}, steps=1))
    summary = train(cfg, progress=False)
    assert summary.step == 1 and np.isfinite(summary.loss)
    shutil.rmtree(out)
