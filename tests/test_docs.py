"""The API reference in docs/ builds from the docstrings without a single Sphinx warning."""

import io
import os
from contextlib import redirect_stderr, redirect_stdout

import pytest
from sphinx.cmd import build as sphinx_build

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


# Sphinx's own napoleon extension uses an interface that Sphinx deprecates (Python warnings
# inside Sphinx, not warnings about these docs).
@pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options:DeprecationWarning")
@pytest.mark.filterwarnings(
  "ignore:The mapping interface for autodoc options:PendingDeprecationWarning"
)
def test_docs_build_without_warnings(tmp_path):
  out, err = io.StringIO(), io.StringIO()
  with redirect_stdout(out), redirect_stderr(err):
    status = sphinx_build.build_main(
      [
        "-W",
        "--keep-going",
        "-E",
        "-b",
        "html",
        "-q",
        "-d",
        str(tmp_path / "doctrees"),
        DOCS,
        str(tmp_path / "html"),
      ]
    )
  assert status == 0, f"sphinx-build failed (status {status}):\n{err.getvalue()}{out.getvalue()}"
  assert not err.getvalue().strip(), f"sphinx-build warnings:\n{err.getvalue()}"
  assert (tmp_path / "html" / "api" / "core.html").is_file()
