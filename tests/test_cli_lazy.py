"""The three CLIs import only the subcommand they run, so `--help` is fast and loads no numeric library."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from data_tools import cli as data_cli
from data_tools.eval import cli as eval_cli
from ditto_jax import cli as jax_cli

HEAVY = ("polars", "pyarrow", "numpy", "jax", "flax", "tokenizers", "transformers", "torch")
CLIS = {"data_tools.cli": data_cli, "ditto_jax.cli": jax_cli, "data_tools.eval.cli": eval_cli}


def _loaded_after(cli_module: str, argv: list[str]) -> set[str]:
    """Top-level modules imported by running the CLI with ARGV (in a fresh interpreter)."""
    code = (
        "import sys\n"
        f"from {cli_module} import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("cli_module, argv", [
    ("data_tools.cli", ["--help"]),
    ("data_tools.cli", ["characters", "--help"]),
    ("ditto_jax.cli", ["--help"]),
    ("data_tools.eval.cli", ["--help"]),
])
def test_help_loads_no_heavy_library(cli_module, argv):
    loaded = _loaded_after(cli_module, argv)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("cli", CLIS.values(), ids=CLIS.keys())
def test_summaries_match_the_modules(cli):
    for name, (module, summary) in cli.SUBCOMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        helps = {action.dest: action.help for action in sub._choices_actions}
        assert helps[name] == summary


@pytest.mark.parametrize("cli", CLIS.values(), ids=CLIS.keys())
def test_top_level_help_lists_every_subcommand(cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, (_, summary) in cli.SUBCOMMANDS.items():
        assert name in out and summary[:30] in out


def test_loading_a_tokenizer_imports_no_jax():
    """`ditto-data tokenize` needs only the tokenizer: resolving `smollm2` and building it loads no jax or flax."""
    code = (
        "import sys\n"
        "from ditto_jax.tokenizer import load_tokenizer\n"
        "bundle = load_tokenizer('smollm2')\n"
        "assert bundle.encode('hello') and bundle.chat_template is not None\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not set(out.stdout.split()) & {"jax", "flax", "orbax"}
