"""Sphinx configuration: the API reference of pub_optax, built from its docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pub_optax  # noqa: E402

project = "pub_optax"
author = "pub_optax contributors"
copyright = "pub_optax contributors"
release = pub_optax.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
]

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"pub_optax {release}"

# Google-style docstrings (Args / Returns / Example / References).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {"member-order": "bysource"}
# Signatures show names and defaults, not annotations: the annotations are jax/optax aliases
# that autodoc expands in full (optax.ScalarOrSchedule becomes a four-line Union of array types),
# and the docstrings' Args sections already say what each argument is.
autodoc_typehints = "none"
autodoc_preserve_defaults = True
# The public names are documented where the package exports them (pub_optax.balance, not
# pub_optax._balance.balance).
add_module_names = True

# ------------------------------------------------------------------------------- public names
# The API pages list the exported names of pub_optax by topic. A name added to
# ``pub_optax.__all__`` but not yet placed on a page is still documented: the line
# ``.. pub-optax-remaining:: pub_optax`` expands to autodoc directives for every name of that
# module's ``__all__`` that no page documents (the same object under another public path counts
# as documented, so re-exports such as ``pub_optax.nash_weights`` are not described twice).

_HERE = os.path.dirname(os.path.abspath(__file__))
_DIRECTIVE = re.compile(
  r"^\.\. (?:auto(?:function|class|data|exception)|py:(?:function|class|data)):: +(\S+)", re.M
)
_MODULE_MEMBERS = re.compile(r"^\.\. automodule::\s+(\S+)\n((?:[ \t]+:.*\n)*)", re.M)
_REMAINING = re.compile(r"^\.\. pub-optax-remaining::\s+(\S+)[ \t]*$", re.M)


def _resolve(path: str):
  """The object at a dotted path, or None (autodoc itself reports a path that does not exist)."""
  module, _, name = path.rpartition(".")
  try:
    return getattr(importlib.import_module(module), name)
  except (ImportError, AttributeError, ValueError):
    pass
  try:
    return importlib.import_module(path)
  except ImportError:
    return None


def _documented() -> set[int]:
  """ids of the objects that some page documents explicitly or through an automodule."""
  ids = set()
  for folder, _, files in os.walk(_HERE):
    if "_build" in folder:
      continue
    for file in files:
      if not file.endswith(".rst"):
        continue
      with open(os.path.join(folder, file), encoding="utf-8") as f:
        text = f.read()
      for path in _DIRECTIVE.findall(text):
        obj = _resolve(path)
        if obj is not None:
          ids.add(id(obj))
      for module, options in _MODULE_MEMBERS.findall(text):
        if re.search(r":members:[ \t]*$", options, re.M):  # all of the module's __all__
          mod = importlib.import_module(module)
          ids.update(id(getattr(mod, name)) for name in getattr(mod, "__all__", ()))
  return ids


def _remaining(module_name: str) -> str:
  module = importlib.import_module(module_name)
  documented = _documented()
  lines = []
  for name in module.__all__:
    obj = getattr(module, name)
    if id(obj) in documented or type(obj).__name__ == "module":
      continue
    kind = "class" if isinstance(obj, type) else "function" if inspect.isroutine(obj) else "data"
    lines.append(f".. auto{kind}:: {module_name}.{name}\n")
  if not lines:
    return ""
  return "Other exported names\n--------------------\n\n" + "\n".join(lines)


def _expand_remaining(app, docname, source):
  source[0] = _REMAINING.sub(lambda m: _remaining(m.group(1)), source[0])
  source[0] = _METHODS_TABLE.sub(_methods_table, source[0])


# ``.. pub-optax-methods-table::`` expands to a table of pub_optax.METHODS, so the page lists
# exactly the registered methods.
_METHODS_TABLE = re.compile(r"^\.\. pub-optax-methods-table::[ \t]*$", re.M)


def _escape(text: str) -> str:
  return re.sub(r"([\\`*|_])", r"\\\1", " ".join(str(text).split()))


def _methods_table(match) -> str:
  rows = [
    f"   * - ``{name}``\n     - {info.level}\n     - {_escape(info.description)}\n"
    f"     - {_escape(info.reference)}\n"
    for name, info in pub_optax.METHODS.items()
  ]
  header = (
    ".. list-table::\n   :header-rows: 1\n   :widths: 15 10 45 30\n\n"
    "   * - name\n     - level\n     - description\n     - reference\n"
  )
  return header + "".join(rows)


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  # A NamedTuple's fields are described by the "Attributes:" section of its docstring (napoleon
  # turns it into attribute entries); autodoc would describe them a second time, as "Alias for
  # field number n", and Sphinx would warn about the duplicate descriptions.
  if what == "class" and (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return None


def setup(app):
  app.connect("source-read", _expand_remaining)
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
