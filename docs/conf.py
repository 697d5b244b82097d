"""Sphinx configuration: the API reference from the docstrings (autodoc with
napoleon for their Google style) and the Markdown pages (MyST).

Build: `make docs` (HTML in build/docs); the test suite builds it with
warnings as errors (tests/test_docs.py).
"""

project = "bcjax"
author = "the bcjax authors"
copyright = "2026, the bcjax authors"  # pylint: disable=redefined-builtin

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["build"]
# `method.md#9-random-keys`-style links between the pages.
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
html_title = "bcjax"
