"""Sphinx configuration of the documentation site (``sphinx-build -W --keep-going -b html docs DIR``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The packages the reference pages are made from, and the extension that makes them.
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

project = "saga-aggregator"
author = "saga-aggregator contributors"
copyright = "the saga-aggregator contributors"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "saga_reference",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

# Markdown: `(label)=` targets, ::: fences, and anchors on headings down to ### so that pages
# can link to each other's sections (`design.md#staleness`).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = "saga-aggregator"
html_static_path: list[str] = []


def setup(app: object) -> None:
    from pygments.lexers.special import TextLexer  # type: ignore[import-untyped]
    from sphinx.application import Sphinx

    assert isinstance(app, Sphinx)
    # docs/proxies.md shows haproxy configurations; Pygments has no lexer for them.
    app.add_lexer("haproxy", TextLexer)
