"""The `ditto-eval` subcommands, one module each exposing `register(subparsers)` (see `ditto_jax.cli_common`).

They parse options, call the package's functions and print a summary; the
work lives in `data_tools.eval`.
"""
