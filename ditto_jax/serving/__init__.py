"""The OpenAI-compatible server behind `ditto-jax serve`: request checking (`api`), routes (`app`),
engine threads (`worker`) and uvicorn (`server`)."""
