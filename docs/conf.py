"""Sphinx configuration: every page is Markdown (MyST) that also reads well on GitHub.

The API reference (api.md) is written by hand and checked against the code by
tests/docs/test_api_reference.py; autodoc stays available for docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs build/docs``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio_durable  # noqa: E402

project = "trio_durable"
author = "the trio_durable authors"
copyright = "the trio_durable authors"
release = trio_durable.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements*.txt"]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Google-style docstrings (CONVENTIONS.md).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "undoc-members": False}
# The public API is what trio_durable/__init__.py re-exports; show that name.
add_module_names = False
python_use_unqualified_type_names = True

html_theme = "furo"
html_title = f"trio_durable {release}"
html_static_path = ["_static"]
