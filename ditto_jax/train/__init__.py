"""Supervised fine-tuning behind `ditto-jax train`: config, shards, loss, sharded step,
FLOPs and memory estimates, Orbax checkpoints and the run loop.

Submodules are imported explicitly (``from ditto_jax.train.loss import lm_loss_sums``);
this package imports nothing itself, so importing it stays cheap.
"""
