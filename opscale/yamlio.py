"""Reading YAML that people and programs hand us (specs, settings, contexts, templates, tokens).

``yaml.safe_load`` is safe from code execution but not from every bad input: a tag it cannot honour
(``!!int x``) raises ValueError, 5,000 nested ``[`` exhaust the recursion limit, and anchors and
aliases can describe a structure exponentially larger than its text (converting it to a proto or JSON
later would expand it). This loader refuses all three with one ``YamlError`` naming the line:

- nesting deeper than ``MAX_DEPTH`` collections;
- aliases (``*name``): none of our files needs them;
- any failure of PyYAML's own (syntax, bad tag value) as the same one-line error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node

MAX_DEPTH = 64


class YamlError(ValueError):
    """The text is not YAML we accept; the message is one line naming where and why."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted here", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nests deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _describe(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    return where + " ".join(str(problem).split())


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (None for an empty one); ``YamlError`` for anything refused."""
    try:
        return list(yaml.load_all(text, Loader=_Loader))  # _Loader is a SafeLoader: no object tags
    except Exception as exc:
        # PyYAML's constructors fail on odd input with whatever they hit (``!!int`` with no value is
        # an IndexError): for text from outside, every failure is the text's fault.
        raise YamlError(_describe(exc)) from None


def load(text: str) -> Any:
    """The one document of ``text`` (None if empty); ``YamlError`` for anything refused or for more
    than one document."""
    documents = load_all(text)
    if len(documents) > 1:
        raise YamlError(f"expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None
