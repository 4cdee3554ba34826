"""One training run: shards in, checkpoints and metrics out (DESIGN.md "A training run").

    summary = train(load_train_config("cpu-demo", ["steps=2"]))

A rerun of the same config resumes from the newest readable checkpoint in
OUT/checkpoints: weights, optimizer state, step and data position. SIGTERM
(preemption) saves and returns; the CLI then exits 0.

Test-only hooks (environment variables, never set in normal use):
  DITTO_TEST_KILL_AFTER_SAVE=N     SIGKILL this process once checkpoint N is on disk;
  DITTO_TEST_SIGTERM_AFTER_STEP=N  send this process SIGTERM right after update N.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from ditto_jax.attention import resolve_impl
from ditto_jax.config import ModelConfig
from ditto_jax.loader import resolve_model_ref
from ditto_jax.model import abstract_model
from ditto_jax import lora as lora_lib
from ditto_jax.sharding import batch_sharding, host_to_global, make_mesh, process_rows, tree_shardings
from ditto_jax.tokenizer import TokenizerBundle, tokenizer_from_hf_dir
from ditto_jax.train import flops as flops_lib
from ditto_jax.train import memory as memory_lib
from ditto_jax.train.checkpoint import ModelFiles, RunCheckpoints
from ditto_native import DittoError
from ditto_jax.train.config import TrainConfig, accumulation_steps, resolve_mesh_shape, total_steps
from ditto_jax.train.data import COLUMNS, Shards, TrainStream, check_manifest, empty_rows, local_rows, open_shards
from ditto_jax.train.metrics import append_metrics, plot_loss
from ditto_jax.train.run_dir import CHECKPOINTS, CONFIG_FILE, MODEL, RUN_CONFIG
from ditto_jax.train.step import init_state, make_eval_step, make_optimizer, make_train_step, state_shardings
from ditto_jax.weights.hf import read_hf_config

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class RunSummary:
    step: int  # updates done when the run returned
    total_steps: int
    loss: float | None  # training loss of the last update this process ran
    heldout_loss: float | None  # the last held-out evaluation
    stopped: bool  # True when SIGTERM ended the run early


def compute_dtype(cfg: TrainConfig):
    if cfg.compute_dtype == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return _DTYPES[cfg.compute_dtype]


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def _run_model(ckpts: RunCheckpoints) -> tuple[ModelConfig, TokenizerBundle] | None:
    """Architecture and tokenizer of a run being resumed, from its own newest checkpoint."""
    for step in reversed(ckpts.steps()):
        folder = ckpts.directory / str(step) / MODEL
        if (folder / CONFIG_FILE).is_file():
            return read_hf_config(folder)[1], tokenizer_from_hf_dir(folder)
    return None


def _load_start_model(cfg: TrainConfig):
    """The weights a fresh run starts from: any model reference, in param_dtype."""
    return resolve_model_ref(cfg.model).load_model(dtype=_DTYPES[cfg.param_dtype])


def _check_same_base(ckpts: RunCheckpoints, lora_record: dict) -> None:
    """A LoRA run resumes only on the base and adapter layout its checkpoints were trained with."""
    for step in reversed(ckpts.steps()):
        found = lora_lib.read_record(ckpts.directory / str(step) / MODEL)
        if found is not None:
            spec, base = found
            if lora_lib.record(spec, base) != lora_record:
                raise DittoError(
                    f"{ckpts.directory / str(step)}: checkpoint was trained with LoRA {lora_lib.record(spec, base)}, "
                    f"not {lora_record}; use another out directory"
                )
            return


def _configure(model, cfg: TrainConfig, attention: str) -> None:
    """Training-time switches on the model; they live in its graphdef, not in the weights."""
    model.dtype = compute_dtype(cfg)
    model.remat = cfg.remat
    model.attention = attention


def _place(tree, shardings):
    """Host (or single-device) arrays onto their shardings, in any process layout."""

    def one(x, sharding):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree, shardings)


def train(cfg: TrainConfig, *, progress: bool = True) -> RunSummary:
    out = Path(cfg.out)
    primary = jax.process_index() == 0
    shards = open_shards(cfg.data)
    ckpts = RunCheckpoints(out / CHECKPOINTS, keep=cfg.keep)
    # On resume the architecture comes from the run's checkpoint; the weights come with the restore.
    found = _run_model(ckpts)
    loaded = None
    spec = cfg.lora_spec()
    if found is None or spec is not None:  # LoRA always needs its base: checkpoints hold adapters only
        loaded, bundle = _load_start_model(cfg)
        model_cfg = loaded.cfg
    else:
        model_cfg, bundle = found
    lora_record = None
    if spec is not None:
        lora_lib.check_spec(spec, model_cfg)
        lora_record = lora_lib.record(spec, lora_lib.base_reference(cfg.model))
        _check_same_base(ckpts, lora_record)
    check_manifest(shards.manifest, bundle, model_cfg, shards.path, seq_len=cfg.seq_len)
    seq_len = shards.seq_len

    mesh_sizes = resolve_mesh_shape(cfg.mesh, jax.device_count())
    data_parallel = mesh_sizes["data"] * mesh_sizes["fsdp"]
    accum = accumulation_steps(cfg, data_parallel)
    per_pass = cfg.micro_batch * data_parallel
    total = total_steps(cfg, shards.train.num_rows)
    tx, schedule = make_optimizer(cfg, total)

    # Refuse what cannot fit before anything large is placed or compiled.
    attention = resolve_impl(cfg.attention, seq_len, dtype=compute_dtype(cfg))
    estimate = memory_lib.estimate_memory(
        model_cfg, seq_len=seq_len, micro_batch=cfg.micro_batch, param_dtype=_DTYPES[cfg.param_dtype],
        compute_dtype=compute_dtype(cfg), remat=cfg.remat, attention=attention,
        param_shards=mesh_sizes["fsdp"] * mesh_sizes["tensor"], tensor=mesh_sizes["tensor"], grad_accum=accum > 1,
        lora_params=lora_lib.adapter_params(model_cfg, spec) if spec else 0, quantize_base=spec.quantize_base if spec else "none",
        lora_dropout_inputs=lora_lib.dropout_inputs(model_cfg, spec, tensor=mesh_sizes["tensor"]) if spec and cfg.lora.dropout > 0 else 0,
    )
    tokens_per_step = cfg.global_batch * seq_len
    _say(
        f"model {model_cfg.model_type}: {model_cfg.num_params() / 1e6:.1f}M parameters; "
        f"{tokens_per_step:,} tokens per step ({cfg.global_batch} rows x {seq_len}); "
        f"mesh data={mesh_sizes['data']} fsdp={mesh_sizes['fsdp']} tensor={mesh_sizes['tensor']}, "
        f"{accum} micro-batch(es) of {cfg.micro_batch} row(s) per device; {attention} attention; {total} steps"
    )
    _say(f"memory per device (estimate): {estimate.describe()}")
    memory_lib.check_fits(estimate, memory_lib.device_memory_bytes())

    mesh = make_mesh(mesh_sizes)
    frozen = None
    if spec is None:
        shell = abstract_model(model_cfg, dtype=compute_dtype(cfg), param_dtype=_DTYPES[cfg.param_dtype])
        _configure(shell, cfg, attention)
        graphdef, abstract_params = nnx.split(shell)
        abstract_params = nnx.to_pure_dict(abstract_params)
    else:  # adapters are trained; the (maybe quantized) base rides along in the state as `frozen`
        lora_lib.attach(loaded, spec, seed=cfg.seed)
        _configure(loaded, cfg, attention)
        graphdef, adapters, frozen = lora_lib.split(loaded)
        del loaded
        abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), adapters)
        frozen = _place(frozen, tree_shardings(frozen, mesh))
    abstract_state = jax.eval_shape(lambda p: init_state(p, tx), abstract_params)
    shardings = state_shardings(abstract_state, mesh)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings)

    files = ModelFiles(model_cfg.to_hf_config(torch_dtype=cfg.param_dtype), bundle, lora_record)
    restored = ckpts.restore_latest(target)
    if restored is not None:
        start, state_parts, record = restored
        rows_consumed = int(record["rows_consumed"])
        state = {**state_parts, "step": jax.device_put(jnp.asarray(start, jnp.int32), shardings["step"])}
        if frozen is not None:
            state["frozen"] = frozen
        _say(f"resuming from {ckpts.directory / str(start)} (step {start}, {rows_consumed} rows consumed)")
    else:
        if frozen is not None:
            params = _place(adapters, shardings["params"])
        else:
            if loaded is None:  # every checkpoint of the run was unreadable: start over from `model`
                loaded, _ = _load_start_model(cfg)
            params = _place(nnx.to_pure_dict(nnx.state(loaded, nnx.Param)), shardings["params"])
            del loaded
        init = jax.jit(lambda p: init_state(p, tx), out_shardings=shardings)
        state = init(params)
        if frozen is not None:
            state["frozen"] = frozen
        start, rows_consumed = 0, 0

    if primary:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_CONFIG).write_text(cfg.to_toml(), encoding="utf-8")
    if shards.heldout.num_rows == 0:
        _say(f"note: {shards.path / 'heldout'} is empty; no held-out evaluation")
    if start >= total:
        _say(f"{out}: already trained for {start} of {total} steps; nothing to do")
        ckpts.close()
        return RunSummary(start, total, None, None, False)

    stream = TrainStream(shards.train, cfg.seed)
    rows_sharding = batch_sharding(mesh, 3, 1)
    batch_shape = (accum, per_pass, seq_len)
    dropout = cfg.lora.dropout if spec is not None else 0.0
    train_step, eval_step = _compile_steps(graphdef, tx, schedule, mesh, shardings, state, batch_shape, frozen, dropout, cfg.seed)
    lo, hi = process_rows(rows_sharding, batch_shape, 1)
    my_offsets = local_rows(accum, per_pass, lo, hi)

    def train_batch(position: int) -> dict[str, jax.Array]:
        local = shards.train.read(stream.rows_at(position + my_offsets))
        return {c: host_to_global(local[c].reshape(accum, hi - lo, seq_len), rows_sharding, batch_shape, 1, lo) for c in COLUMNS}

    flops_per_token = flops_lib.flops_per_token(model_cfg, seq_len)
    peak, peak_source = flops_lib.peak_flops(peak_tflops=cfg.peak_tflops)
    _say(f"MFU peak: {peak / 1e12:.2f} TFLOP/s per device ({peak_source})")

    stop = {"requested": False}
    # Preemption arrives as SIGTERM; Python delivers signals to the main thread only.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True)) if on_main else None
    kill_after_save = int(os.environ.get("DITTO_TEST_KILL_AFTER_SAVE", "0") or 0)
    term_after_step = int(os.environ.get("DITTO_TEST_SIGTERM_AFTER_STEP", "0") or 0)
    bar = tqdm(total=total, initial=start, desc="train", unit="step", file=sys.stderr, disable=not (progress and primary), dynamic_ncols=True)
    loss = heldout = None
    step = start
    try:
        t_prev = time.time()
        with jax.set_mesh(mesh):
            for step in range(start + 1, total + 1):
                state, metrics = train_step(state, train_batch(rows_consumed))
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                finished = time.time()
                rows_consumed += cfg.global_batch
                seconds = max(finished - t_prev, 1e-9)
                loss = metrics["loss"]
                tokens_per_s = tokens_per_step / seconds
                record = {
                    "step": step, "loss": loss, "lr": metrics["lr"], "grad_norm": metrics["grad_norm"], "tokens_per_s": tokens_per_s,
                    "mfu": flops_lib.mfu(tokens_per_s, flops_per_token, peak, devices=jax.device_count()), "time": finished,
                }
                last = step == total
                if (last or (cfg.eval_every and step % cfg.eval_every == 0)) and shards.heldout.num_rows:
                    eval_params = state["params"] if frozen is None else (state["params"], state["frozen"])
                    heldout = record["heldout_loss"] = heldout_loss(eval_step, eval_params, shards, mesh, per_pass)
                if primary and (step % cfg.log_every == 0 or "heldout_loss" in record or last):
                    append_metrics(out, record)
                    if "heldout_loss" in record or last:
                        plot_loss(out)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", mfu=f"{record['mfu']:.1%}")
                if step == term_after_step:
                    os.kill(os.getpid(), signal.SIGTERM)
                if step % cfg.save_every == 0 or last or stop["requested"]:
                    # The data position: the stream is a pure function of (seed, epoch), so this is its whole state.
                    trainer = {
                        "step": step, "rows_consumed": rows_consumed, "epoch": rows_consumed // shards.train.num_rows,
                        "seed": cfg.seed, "global_batch": cfg.global_batch,
                    }
                    ckpts.save(step, state, trainer, files)
                    if step == kill_after_save:
                        ckpts.wait()
                        os.kill(os.getpid(), signal.SIGKILL)
                if stop["requested"]:
                    _say(f"SIGTERM: saved checkpoint {step}; stopping")
                    break
                t_prev = time.time()
    finally:
        bar.close()
        if on_main:
            signal.signal(signal.SIGTERM, previous)
        ckpts.close()
    if primary and stop["requested"]:
        plot_loss(out)
    return RunSummary(step, total, loss, heldout, stop["requested"])


def _compile_steps(graphdef, tx, schedule, mesh, shardings, state, batch_shape, frozen=None, lora_dropout=0.0, seed=0):
    """The train and evaluation steps, compiled ahead of time, with every process waiting for the others.

    Processes compile at different speeds, and CPU collectives (gloo) give up on
    a peer that joins 30 s late; a barrier after compiling starts them together.
    """
    seq_len = batch_shape[-1]

    def rows(shape, batch_axis):
        sharding = batch_sharding(mesh, len(shape), batch_axis)
        return {c: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding) for c in COLUMNS}

    # A LoRA state also carries `frozen`, the base, placed like the parameters it came from.
    train_shardings = shardings if frozen is None else {**shardings, "frozen": tree_shardings(frozen, mesh)}
    eval_sharding = shardings["params"] if frozen is None else (shardings["params"], train_shardings["frozen"])
    eval_params = state["params"] if frozen is None else (state["params"], state["frozen"])
    with jax.set_mesh(mesh):
        train_step = make_train_step(graphdef, tx, schedule, mesh=mesh, state_sharding=train_shardings, lora_dropout=lora_dropout, seed=seed)
        eval_step = make_eval_step(graphdef, mesh=mesh, params_sharding=eval_sharding)
        train_step = train_step.lower(state, rows(batch_shape, 1)).compile()
        eval_step = eval_step.lower(eval_params, rows((batch_shape[1], seq_len), 0)).compile()
    ocp.multihost.get_barrier_sync_fn()(key="ditto-train-compiled", timeout_ms=3_600_000)  # no-op for one process
    return train_step, eval_step


def heldout_loss(eval_step, params, shards: Shards, mesh, per_pass: int) -> float:
    """Mean loss per counted target over all of heldout/, each process reading its rows."""
    split, seq_len = shards.heldout, shards.seq_len
    sharding = batch_sharding(mesh, 2, 0)
    lo, hi = process_rows(sharding, (per_pass, seq_len), 0)
    total = count = 0.0
    for start in range(0, split.num_rows, per_pass):
        wanted = start + np.arange(lo, hi)
        real = wanted[wanted < split.num_rows]
        local = split.read(real)
        if len(real) < hi - lo:
            pad = empty_rows(hi - lo - len(real), seq_len)
            local = {c: np.concatenate([local[c], pad[c]]) for c in COLUMNS}
        batch = {c: host_to_global(local[c], sharding, (per_pass, seq_len), 0, lo) for c in COLUMNS}
        s, n = jax.device_get(eval_step(params, batch))
        total += float(s)
        count += float(n)
    return total / max(count, 1.0)

