"""Supervised fine-tuning: loss, attention kernels' cost model, FLOPs and memory estimates, trainer.

Submodules are imported explicitly (``from ditto_jax.train.loss import lm_loss_sums``);
this package imports nothing itself, so importing it stays cheap.
"""
