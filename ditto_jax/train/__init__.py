"""The SFT trainer behind `ditto-jax train` (config, data, sharded step, checkpoints, run loop)."""
