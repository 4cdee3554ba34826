"""The shared CLI convention: common flags anywhere, one-line errors, no traceback."""
from __future__ import annotations

import argparse
import errno

import pytest

from ditto_jax import cli_common
from ditto_native import DittoError


def _fake_module(tmp_path, monkeypatch, body: str) -> str:
    (tmp_path / "fake_cmd.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fake_cmd"


_BODY = '''
def register(subparsers):
    p = subparsers.add_parser("go")
    p.add_argument("--what", default="ok")
    p.set_defaults(func=run)

def run(args):
    if args.what == "ditto":
        raise __import__("ditto_native").DittoError("bad thing\\n  on two lines")
    if args.what == "oserror":
        open("/nonexistent-dir/x.txt")
    if args.what == "isdir":
        open("/")
    print("verbose" if args.verbose else "quiet", "noprogress" if args.no_progress else "progress")
    return 0
'''


def test_common_flags_before_or_after_subcommand(tmp_path, monkeypatch, capsys):
    mod = _fake_module(tmp_path, monkeypatch, _BODY)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert cli_common.run_main("prog", "d", {"go": (mod, "")}, ["go", "--verbose"]) == 0
    assert capsys.readouterr().out.strip() == "verbose progress"
    assert cli_common.run_main("prog", "d", {"go": (mod, "")}, ["--verbose", "go", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "verbose noprogress"


@pytest.mark.parametrize("what, expected", [
    ("ditto", "prog go: error: bad thing on two lines"),
    ("oserror", "prog go: error: /nonexistent-dir/x.txt: No such file or directory"),
    ("isdir", "prog go: error: /: Is a directory"),
])
def test_errors_are_one_line(tmp_path, monkeypatch, capsys, what, expected):
    mod = _fake_module(tmp_path, monkeypatch, _BODY)
    assert cli_common.run_main("prog", "d", {"go": (mod, "")}, ["go", "--what", what]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [expected]


def test_one_line_formats():
    assert cli_common.one_line(DittoError("a\n b")) == "a b"
    assert cli_common.one_line(OSError(errno.ENOSPC, "No space left on device", "/out/x")) == "/out/x: No space left on device"
    assert cli_common.one_line(OSError("plain")) == "plain"


def test_subcommand_keeps_its_own_flag(tmp_path, monkeypatch):
    body = _BODY.replace('p.add_argument("--what", default="ok")', 'p.add_argument("--what", default="ok")\n    p.add_argument("--no-progress", action="store_true", help="own")')
    mod = _fake_module(tmp_path, monkeypatch, body)
    parser = cli_common.build_parser("prog", "d", {"go": (mod, "")})
    assert isinstance(parser, argparse.ArgumentParser)
    assert parser.parse_args(["go", "--no-progress"]).no_progress is True


def test_a_module_registering_several_subcommands_works_for_each(tmp_path, monkeypatch, capsys):
    body = '''
def register(subparsers):
    for name in ("first", "second"):
        p = subparsers.add_parser(name)
        p.set_defaults(func=lambda args, name=name: print(name) or 0)
'''
    (tmp_path / "pair_cmd.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    commands = {"first": ("pair_cmd", "one"), "second": ("pair_cmd", "two")}
    for name in ("first", "second"):
        assert cli_common.run_main("prog", "d", commands, [name]) == 0
        assert capsys.readouterr().out.strip() == name
