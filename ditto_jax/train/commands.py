"""`ditto-jax train --config FILE|NAME [--set key=value]...`: parse, check, connect, run."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="fine-tune a model on packed shards (SFT)",
        description=(
            "Supervised fine-tuning on the shards `ditto-data tokenize` writes. The config is a TOML file "
            "or a shipped name (cpu-demo, ditto-paper); --set overrides keys, dotted for tables "
            "(--set steps=20 --set mesh.fsdp=4). The run directory `out` gets config.toml, checkpoints/<step>/, "
            "metrics.jsonl and loss.png; rerunning the same command resumes from the newest checkpoint. "
            "On several hosts, run the same command on each: a TPU pod or SLURM job is detected, or pass "
            "--coordinator/--num-processes/--process-id."
        ),
    )
    p.epilog = (
        "keys: model, data, out, steps | epochs, seq_len, global_batch, micro_batch, lr, min_lr_ratio, warmup_ratio, "
        "weight_decay, clip_norm, b1, b2, param_dtype, compute_dtype, remat (none|full|save-matmuls), "
        "attention (auto|dense|chunked|splash|cudnn), mesh.data, mesh.fsdp, mesh.tensor (-1 = the rest), "
        "eval_every, save_every, keep, log_every, seed, peak_tflops. See ditto_jax/train/config.py for each key's meaning."
    )
    p.add_argument("--config", required=True, metavar="FILE|NAME", help="TOML config file, or a shipped config: cpu-demo, ditto-paper")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set lr=3e-5 --set mesh.fsdp=4")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="multi-process: address of process 0 (env DITTO_COORDINATOR)")
    p.add_argument("--num-processes", type=int, metavar="N", help="multi-process: number of processes (env DITTO_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, metavar="I", help="multi-process: this process's index (env DITTO_PROCESS_ID)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from ditto_jax.train.config import load_train_config
    from ditto_jax.train.distributed import maybe_initialize

    cfg = load_train_config(args.config, args.overrides)  # config errors come before any device work
    maybe_initialize(args.coordinator, args.num_processes, args.process_id)
    from ditto_jax.train.run import train

    summary = train(cfg, progress=not args.no_progress)
    if summary.stopped:
        print(f"ditto-jax train: stopped by SIGTERM after step {summary.step}; rerun to resume", file=sys.stderr)
    return 0
