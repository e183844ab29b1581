"""The README's ``python`` blocks run as written, in order, in one namespace.

Blocks fenced as ``py`` are fragments (they name variables of a larger program) and are only
parsed, so a syntax error in them fails too.
"""

import ast
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
  return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_readme_python_blocks_run():
  blocks = _blocks("python")
  assert len(blocks) >= 4  # quickstart, NNX, Linen, optax chain
  namespace: dict = {}
  for i, block in enumerate(blocks):
    exec(compile(block, f"README.md python block {i}", "exec"), namespace)
  weights = namespace["pub_optax"].balance_state(namespace["opt_state"]).weights
  assert float(weights.sum()) > 0
  losses = namespace["losses"]
  assert losses.shape == (2,)


def test_readme_fragments_parse():
  for block in _blocks("py"):
    ast.parse(block)


def test_readme_method_table_lists_every_registered_method():
  import pub_optax

  rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", README.read_text(), flags=re.M)
  assert dict(rows) == {name: info.level for name, info in pub_optax.METHODS.items()}
