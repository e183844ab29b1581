"""The API reference in docs/ builds from the docstrings without a single Sphinx warning.

Sphinx runs in its own process: autodoc imports the package and, with
``autodoc_preserve_defaults``, rewrites the default values of the functions it documents, which
must not leak into the tests that share this process.
"""

import os
import subprocess
import sys

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def test_docs_build_without_warnings(tmp_path):
  args = ["-W", "--keep-going", "-E", "-b", "html", "-q", "-d", str(tmp_path / "doctrees")]
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", *args, DOCS, str(tmp_path / "html")],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
    env=dict(
      os.environ, PYTHONWARNINGS="ignore::DeprecationWarning,ignore::PendingDeprecationWarning"
    ),
  )
  report = f"{proc.stderr}{proc.stdout}"
  assert proc.returncode == 0, f"sphinx-build failed (status {proc.returncode}):\n{report}"
  assert not proc.stderr.strip(), f"sphinx-build warnings:\n{proc.stderr}"
  assert (tmp_path / "html" / "api" / "core.html").is_file()
