"""Training throughput and memory: ditto-jax's train step vs transformers+torch, same run, same machine.

1. Throughput: SmolLM2-135M, sequence length 512, batch 4, AdamW, float32 on both
   sides. Tokens/s counts trained tokens over the wall time of the timed steps
   (the first step, which compiles, is excluded); best of `--repeats` step timings.
   MFU = model FLOPs (ditto_jax.train.flops: 6 x matmul weights + causal attention)
   per second over the CPU matmul probe's peak, for both sides.
2. Memory: the longest sequence that trains at batch 1 within `--mem-limit-gib`
   (10 GiB) of peak resident memory, dense against chunked attention, both with
   full remat (the cpu-demo setting), over lengths 1024, 2048, 4096 and 8192.

Each measurement runs in its own subprocess, so peak memory (ru_maxrss) is that
side's alone; a probe whose resident memory crosses the limit is killed and
counts as not fitting. The JAX side drives the trainer's real jitted step
(ditto_jax.train.step: optimizer, micro-batch scan, chunked loss).

    .venv/bin/python bench/train.py [--steps 5] [--repeats 1] [--mem-limit-gib 10] [--lengths 1024,2048,4096,8192]
    .venv/bin/python bench/train.py --quick      # tiny random model, seconds: checks the plumbing
    .venv/bin/python bench/train.py --gpu-mfu    # where a GPU is lent: ~0.5B model, bf16, 8,192 tokens
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# bench/tokenize.py would shadow the standard library's `tokenize` (inspect imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

GIB = 1024**3
# A Qwen2.5-0.5B-shaped model (random weights) for the accelerator MFU figure.
GPU_MODEL = dict(
    model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14,
    num_kv_heads=2, head_dim=64, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, qkv_bias=True,
    max_position_embeddings=32768,
)


# ---- workers (each in its own process) ---------------------------------------------------------


def model_config(spec: dict):
    from ditto_jax.config import ModelConfig, tiny_config

    if spec["model"] == "tiny":
        return tiny_config(max_position_embeddings=8192)
    if spec["model"] == "gpu-0.5b":
        return ModelConfig(**GPU_MODEL)
    from ditto_jax.loader import load_model, resolve_model_ref

    return load_model(str(resolve_model_ref("smollm2").path))[0].cfg


def random_batch(vocab: int, batch: int, seq: int, seed: int = 0):
    """One packed-looking batch: a single segment per row, every target counted."""
    import numpy as np

    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, (batch, seq)).astype(np.int32)
    return ids


def jax_worker(spec: dict) -> dict:
    """Train `steps` + 1 steps with the trainer's jitted step; report timings and peak memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from ditto_jax.model import init_model
    from ditto_jax.train.config import MeshConfig, TrainConfig
    from ditto_jax.train.flops import cpu_matmul_peak_flops, flops_per_token, peak_flops
    from ditto_jax.train.step import init_state, make_optimizer, make_train_step

    dtype = jnp.dtype(spec["dtype"])
    if spec["model"] == "smollm2":
        from ditto_jax.loader import load_model, resolve_model_ref

        model, _ = load_model(str(resolve_model_ref("smollm2").path))
        model.dtype, model.remat, model.attention = dtype, spec["remat"], spec["attention"]
    else:
        model = init_model(model_config(spec), dtype=dtype, remat=spec["remat"], attention=spec["attention"])
    cfg = model.cfg
    b, t = spec["batch"], spec["seq"]
    train_cfg = TrainConfig(
        # A constant lr (no warm-up, cosine floor = lr) as torch's AdamW below, so both sides' losses track each other.
        steps=spec["steps"] + 1, global_batch=b, micro_batch=b, lr=1e-5, warmup_ratio=0.0, min_lr_ratio=1.0,
        clip_norm=1.0, weight_decay=0.0,
        remat=spec["remat"], attention=spec["attention"], mesh=MeshConfig(data=1, fsdp=1, tensor=1),
    )
    tx, schedule = make_optimizer(train_cfg, spec["steps"] + 1)
    if spec.get("lora_rank"):  # adapters on every projection; the base frozen outside the optimizer
        from ditto_jax import lora

        lora.attach(model, lora.LoRASpec(spec["lora_rank"], 2.0 * spec["lora_rank"], tuple(lora.TARGETS)))
        graphdef, params, frozen = lora.split(model)
        del model
        state = {**init_state(params, tx), "frozen": frozen}
    else:
        graphdef, params = nnx.split(model)
        del model
        state = init_state(params, tx)
    optimizer_bytes = sum(x.nbytes for x in jax.tree.leaves(state["opt_state"]))
    step = make_train_step(graphdef, tx, schedule)
    ids = random_batch(cfg.vocab_size, b, t)
    batch = {
        "input_ids": ids[None],  # [accum, rows, seq]
        "loss_mask": np.ones((1, b, t), np.int32),
        "segment_ids": np.ones((1, b, t), np.int32),
        "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (1, b, t)).copy(),
    }
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    start = time.perf_counter()
    state, metrics = step(state, batch)  # compiles
    first_loss = float(metrics["loss"])
    compile_and_first = time.perf_counter() - start
    times, losses = [], [first_loss]
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))  # blocks until the step is done
        times.append(time.perf_counter() - start)
    out = {
        "side": "ditto-jax", "first_step_s": compile_and_first, "step_s": times, "losses": losses,
        "flops_per_token": flops_per_token(cfg, t), "params": cfg.num_params(),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "device": jax.devices()[0].device_kind,
        "optimizer_bytes": optimizer_bytes,
    }
    if spec.get("probe"):
        out["peak_flops"], out["peak_source"] = (
            (cpu_matmul_peak_flops(), "CPU matmul probe") if jax.default_backend() == "cpu" else peak_flops()
        )
    return out


def torch_worker(spec: dict) -> dict:
    """The same training steps with transformers' model and torch.optim.AdamW."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["model"] == "smollm2":
        from ditto_jax.loader import resolve_model_ref

        gguf = resolve_model_ref("smollm2").path
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    else:
        # The JAX side's random model (same seed), exported and loaded: both sides start from the same weights.
        import tempfile

        from ditto_jax.model import init_model
        from ditto_jax.weights.hf import export_hf

        with tempfile.TemporaryDirectory() as tmp:
            export_hf(init_model(model_config(spec)), None, tmp)
            model = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    ids = torch.tensor(random_batch(model.config.vocab_size, spec["batch"], spec["seq"]), dtype=torch.long)

    def one_step() -> float:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the JAX side's clip_norm
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().item()

    start = time.perf_counter()
    losses = [one_step()]
    first = time.perf_counter() - start
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        losses.append(one_step())
        times.append(time.perf_counter() - start)
    return {
        "side": "transformers+torch", "first_step_s": first, "step_s": times, "losses": losses,
        "threads": torch.get_num_threads(), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


# ---- the parent: spawn, watch memory, report --------------------------------------------------


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_worker(spec: dict, mem_limit: int | None = None, timeout: float | None = None) -> dict:
    """Run one worker in a fresh interpreter; kill it if its resident memory passes `mem_limit`."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu" if not spec.get("accelerator") else "")
    if not env["JAX_PLATFORMS"]:
        env.pop("JAX_PLATFORMS")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    peak, start = 0, time.monotonic()
    while proc.poll() is None:
        peak = max(peak, _rss(proc.pid))
        if mem_limit is not None and peak > mem_limit:
            proc.kill()
            proc.wait()
            return {"error": f"resident memory passed {mem_limit / GIB:.1f} GiB", "peak_rss": peak, "over_limit": True}
        if timeout is not None and time.monotonic() - start > timeout:
            proc.kill()
            proc.wait()
            return {"error": f"timed out after {timeout:.0f} s", "peak_rss": peak}
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return {"error": tail, "peak_rss": peak}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = max(result["peak_rss"], peak)
    return result


def tokens_per_s(result: dict, tokens_per_step: int) -> float:
    return tokens_per_step / min(result["step_s"]) if result.get("step_s") else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help="tiny random model and short rows: checks the plumbing in seconds")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side after the compile step (default 5)")
    parser.add_argument("--seq", type=int, default=512, help="throughput: sequence length (default 512)")
    parser.add_argument("--batch", type=int, default=4, help="throughput: rows per step (default 4)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--mem-limit-gib", type=float, default=10.0, help="memory probe: peak RSS limit (default 10)")
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="memory probe: sequence lengths, ascending")
    parser.add_argument("--skip-memory", action="store_true", help="only the throughput comparison")
    parser.add_argument("--gpu-mfu", action="store_true", help="on a GPU: MFU of a ~0.5B model in bf16 at 8,192 tokens")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        spec = json.loads(args.worker)
        result = jax_worker(spec) if spec["side"] == "jax" else torch_worker(spec)
        print(json.dumps(result))
        return 0

    if args.gpu_mfu:
        spec = dict(side="jax", model="gpu-0.5b", dtype="bfloat16", remat="full", attention="auto", batch=1, seq=8192,
                    steps=args.steps, probe=True, accelerator=True)
        r = run_worker(spec)
        if "error" in r:
            print(f"gpu-mfu: failed: {r['error']}")
            return 1
        tps = tokens_per_s(r, 8192)
        print(f"{r['device']}: ~0.5B ({r['params'] / 1e6:.0f}M) bf16, 8,192 tokens x 1 row, remat full, auto attention: "
              f"{tps:,.0f} tokens/s, MFU {tps * r['flops_per_token'] / r['peak_flops']:.1%} of {r['peak_flops'] / 1e12:.0f} "
              f"TFLOP/s ({r['peak_source']}); losses {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}")
        return 0

    model = "tiny" if args.quick else "smollm2"
    steps = 1 if args.quick else args.steps
    seq, batch = (64, 2) if args.quick else (args.seq, args.batch)
    lengths = [128, 256] if args.quick else [int(x) for x in args.lengths.split(",")]
    mem_limit = int(args.mem_limit_gib * GIB)
    load_before = os.getloadavg()[0]

    common = dict(model=model, batch=batch, seq=seq, steps=steps)
    print(f"throughput: {model}, {batch} x {seq} tokens, AdamW, float32 ...", file=sys.stderr, flush=True)
    ours = run_worker(dict(common, side="jax", dtype="float32", remat="none", attention="auto", probe=True))
    theirs = run_worker(dict(common, side="torch", threads=args.torch_threads))
    print(f"throughput: {model}, LoRA rank 16 ...", file=sys.stderr, flush=True)
    lora = run_worker(dict(common, side="jax", dtype="float32", remat="none", attention="auto", lora_rank=16))
    for r in (ours, theirs, lora):
        if "error" in r:
            print(f"throughput worker failed: {r['error']}")
            return 1
    tokens = batch * seq
    peak = ours["peak_flops"]
    ours_tps, theirs_tps = tokens_per_s(ours, tokens), tokens_per_s(theirs, tokens)
    flops_tok = ours["flops_per_token"]

    probes: dict[str, list[tuple[int, dict]]] = {}
    if not args.skip_memory:
        for attention in ("dense", "chunked"):
            probes[attention] = []
            for t in lengths:
                print(f"memory probe: {attention} attention, 1 x {t} tokens ...", file=sys.stderr, flush=True)
                r = run_worker(dict(side="jax", model=model, batch=1, seq=t, steps=0, dtype="float32", remat="full",
                                    attention=attention), mem_limit=mem_limit)
                probes[attention].append((t, r))
                if "error" in r:
                    break  # longer rows need more

    print(f"\nTraining, {model} float32, AdamW, {batch} x {seq} tokens per step, best of {steps} timed steps "
          f"(compile step excluded); same weights, data and constant lr on both sides, so the losses should agree; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"{os.cpu_count()} CPUs; peak {peak / 1e9:.1f} GFLOP/s ({ours['peak_source']})")
    print(f"{'side':<20} | {'tokens/s':>9} | {'MFU':>6} | {'peak RSS':>9} | first -> last loss")
    for name, r, tps in (("ditto-jax", ours, ours_tps), (f"transformers {theirs['threads']}T", theirs, theirs_tps)):
        print(f"{name:<20} | {tps:>9.1f} | {tps * flops_tok / peak:>6.1%} | {r['peak_rss'] / GIB:>7.2f} G | "
              f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}")
    print(f"ratio ditto-jax / transformers: {ours_tps / theirs_tps:.2f}x (target >= 1.0x)")
    print(f"\nFull fine-tuning against LoRA rank 16 (q,k,v,o,gate,up,down), {model} float32, {batch} x {seq} tokens:")
    print(f"{'ditto-jax':<20} | {'tokens/s':>9} | {'peak RSS':>9} | {'optimizer state':>15} | first -> last loss")
    for name, r in (("full", ours), ("LoRA r16", lora)):
        print(f"{name:<20} | {tokens_per_s(r, tokens):>9.1f} | {r['peak_rss'] / GIB:>7.2f} G | "
              f"{r['optimizer_bytes'] / 2**20:>12.2f} MiB | {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}")
    if probes:
        print(f"\nLongest row that trains at batch 1 within {args.mem_limit_gib:g} GiB peak RSS (remat full):")
        for attention, rows in probes.items():
            fitted = [t for t, r in rows if "error" not in r]
            cells = ", ".join(
                f"{t}: {r['peak_rss'] / GIB:.2f} GiB" + (f" ({r['error']})" if "error" in r else "") for t, r in rows
            )
            print(f"  {attention:<8} longest {max(fitted) if fitted else 'none'}  [{cells}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
