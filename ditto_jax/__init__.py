"""JAX model core."""
