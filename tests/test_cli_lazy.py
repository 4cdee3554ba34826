"""`ditto-data` imports only the subcommand it runs, so `--help` is fast."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from data_tools.cli import _SUBCOMMANDS

HEAVY = ("polars", "pyarrow", "numpy", "jax", "tokenizers", "transformers", "torch")


def _loaded_after(argv: list[str]) -> set[str]:
    """Top-level modules imported by `ditto-data ARGV` (run in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from data_tools.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("argv", [["--help"], ["characters", "--help"]])
def test_help_loads_no_heavy_library(argv):
    loaded = _loaded_after(argv)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_summaries_match_the_modules(capsys):
    for name, (module, summary) in _SUBCOMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        (action,) = sub._choices_actions
        assert (action.dest, action.help) == (name, summary)


def test_top_level_help_lists_every_subcommand(capsys):
    from data_tools.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name, (_, summary) in _SUBCOMMANDS.items():
        assert name in out and summary[:30] in out
