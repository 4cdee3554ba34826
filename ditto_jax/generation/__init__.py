"""Batched generation: KV-cache decoding, HF-style sampling, llguidance-constrained output."""
from ditto_jax.generation.engine import Engine
from ditto_jax.generation.requests import Completion, GenerationRequest

__all__ = ["Completion", "Engine", "GenerationRequest"]
