"""Joining the processes of a multi-host run (`jax.distributed.initialize`).

The same `ditto-jax train` command runs on every host. It connects them when
  * explicit settings are given: `--coordinator HOST:PORT --num-processes N
    --process-id I`, or the environment variables DITTO_COORDINATOR,
    DITTO_NUM_PROCESSES and DITTO_PROCESS_ID;
  * or the job runs under a cluster JAX detects itself: a TPU pod slice with
    several workers, or a SLURM/Open MPI job with several tasks.
A single process on one machine initialises nothing.
"""
from __future__ import annotations

import os

import jax

from ditto_native import DittoError


def _cluster_detected() -> bool:
    env = os.environ
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in env:
        return True
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts or "MEGASCALE_COORDINATOR_ADDRESS" in env


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Initialise `jax.distributed` when this is one process of several; True if it did."""
    env = os.environ
    coordinator = coordinator or env.get("DITTO_COORDINATOR")
    if num_processes is None and env.get("DITTO_NUM_PROCESSES"):
        num_processes = _int_env("DITTO_NUM_PROCESSES")
    if process_id is None and env.get("DITTO_PROCESS_ID"):
        process_id = _int_env("DITTO_PROCESS_ID")
    # CPU collectives across processes need gloo; this only affects the CPU backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        if num_processes is None or process_id is None:
            raise DittoError("--coordinator needs --num-processes and --process-id (or DITTO_NUM_PROCESSES, DITTO_PROCESS_ID)")
        if not 0 <= process_id < num_processes:
            raise DittoError(f"--process-id {process_id} must be in [0, {num_processes})")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
        return True
    if num_processes is not None or process_id is not None:
        raise DittoError("--num-processes/--process-id need --coordinator HOST:PORT (or DITTO_COORDINATOR)")
    if _cluster_detected():
        jax.distributed.initialize()
        return True
    return False


def _int_env(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise DittoError(f"environment variable {name} must be an integer, got {os.environ[name]!r}") from None
