"""The simulation's prompt templates: Jinja files, built in per language, replaceable by path.

Built-ins live in `data_tools/prompts/` as `query.<lang>.jinja` and
`response.<lang>.jinja`; a language without its own file uses English and is
told which language to write in. A user's file (`--query-template`,
`--response-template`) replaces the built-in for every language and sees the
same variables (listed at the top of each built-in).

Rendering goes through `ditto_native.ChatTemplate`, the project's one minijinja
renderer, so prompt and chat templates share their Jinja dialect.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import ditto_native
from ditto_native import DittoError

KINDS = ("query", "response")


class PromptTemplates:
    """`render(kind, lang, **variables) -> str`, compiling each template once.

    >>> PromptTemplates().render("response", "en", role={"label": "Ada Lovelace", "description": "", "profile": "...", "facts": []})[:21]
    'You are Ada Lovelace.'
    """

    def __init__(self, overrides: dict[str, str | Path | None] | None = None):
        self._overrides: dict[str, Path] = {}
        for kind, path in (overrides or {}).items():
            if kind not in KINDS:
                raise ValueError(f"unknown prompt kind {kind!r}")
            if path is not None:
                self._overrides[kind] = Path(path)
        self._compiled: dict[tuple[str, str], tuple[str, Any]] = {}

    def source_name(self, kind: str, lang: str) -> str:
        """Where the template for (kind, lang) comes from: a path, or `builtin:<file>`."""
        return self._locate(kind, lang)[0]

    def render(self, kind: str, lang: str, /, **variables: Any) -> str:
        """The prompt text; `lang` is also passed to the template as a variable."""
        name, template = self._template(kind, lang)
        try:
            return template.render([], extra_vars={**variables, "lang": lang}).strip() + "\n"
        except DittoError as exc:
            raise DittoError(f"{name}: cannot render: {_one_line(exc)}") from None

    def _template(self, kind: str, lang: str):
        key = (kind, lang)
        if key not in self._compiled:
            name, source = self._locate(kind, lang)
            try:
                self._compiled[key] = (name, ditto_native.ChatTemplate(source))
            except DittoError as exc:
                raise DittoError(f"{name}: not a valid Jinja template: {_one_line(exc)}") from None
        return self._compiled[key]

    def _locate(self, kind: str, lang: str) -> tuple[str, str]:
        if kind in self._overrides:
            path = self._overrides[kind]
            try:
                return str(path), path.read_text(encoding="utf-8")
            except OSError as exc:
                raise DittoError(f"{path}: cannot read {kind} template: {exc.strerror or exc}") from None
        folder = resources.files("data_tools").joinpath("prompts")
        for candidate in (f"{kind}.{lang}.jinja", f"{kind}.en.jinja"):
            entry = folder.joinpath(candidate)
            if entry.is_file():
                return f"builtin:{candidate}", entry.read_text(encoding="utf-8")
        raise DittoError(f"no built-in {kind} template (data_tools/prompts/{kind}.en.jinja is missing from the install)")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
