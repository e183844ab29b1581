"""Which parameters the tasks share: masks in every form optax and Flax users write them.

A mask says, per parameter leaf, whether it is shared by the tasks (balanced) or task-specific.
:func:`resolve_shared` accepts

* ``None`` (every leaf is shared) or a single bool;
* a pytree of bools with the params' structure, or a *prefix* of it, as ``optax.masked``
  takes (``{"encoder": True, "heads": False}`` covers every leaf below each key);
* the same wrapped in Flax NNX variables or an ``nnx.State`` (e.g. a ranking model's
  ``shared_mask()``, or ``jax.tree.map(..., nnx.state(model, nnx.Param))``), matched to
  pure params (what ``nnx.Optimizer`` hands to the transformation) by key path;
* a callable on the params returning any of the above.

Leaves are matched by their key paths (dict keys, attribute names and sequence indices), so a
plain nested dict, an ``nnx.State`` and a Linen ``FrozenDict`` with the same keys all match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

SharedSpec = Any | Callable[[Any], Any] | None


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def unwrap_variables(tree):
  """``tree`` with every Flax NNX variable replaced by its value."""
  return jax.tree.map(lambda x: x.get_value() if _is_variable(x) else x, tree, is_leaf=_is_variable)


def _key(entry) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return str(entry)


def _paths(tree) -> list[tuple[tuple, Any]]:
  return [(tuple(_key(k) for k in p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def _is_static_bool(x) -> bool:
  if isinstance(x, bool):
    return True
  return (
    hasattr(x, "dtype")
    and not isinstance(x, jax.Array)
    and x.dtype == bool
    and getattr(x, "shape", ()) == ()
  )


def _show(path: tuple) -> str:
  return "".join(f"[{k!r}]" for k in path) or "<root>"


def resolve_shared(shared: SharedSpec, reference) -> Any:
  """The shared-leaf mask as a pytree of Python bools with ``reference``'s structure.

  NNX variables in ``reference`` are kept in the result (so the mask lines up with
  gradients that carry the same wrappers); in the mask they are read through.

  Args:
    shared: ``None`` (every leaf is shared), a bool, a pytree of bools matching the
      params or a prefix of them (optionally wrapped in Flax NNX variables), or a
      callable mapping the params to one of these.
    reference: the params (or a params-shaped tree of ``jax.ShapeDtypeStruct``).

  Returns:
    A pytree with ``reference``'s structure whose leaves are Python bools.

  Raises:
    ValueError: a mask leaf is not a static bool, a parameter is covered by no mask
      entry, or a mask entry covers no parameter (the message names the paths).

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"encoder": {"w": jnp.ones(2), "b": jnp.ones(1)}, "heads": [jnp.ones(1)]}
    >>> resolve_shared({"encoder": True, "heads": False}, params)
    {'encoder': {'b': True, 'w': True}, 'heads': [False]}
  """
  structure = jax.tree.structure(reference)  # the result keeps any NNX wrappers it has
  reference = unwrap_variables(reference)
  if shared is None:
    return jax.tree.unflatten(structure, [True] * structure.num_leaves)
  mask = unwrap_variables(shared(reference) if callable(shared) else shared)
  entries = dict(_paths(mask))
  bad = [_show(p) for p, m in entries.items() if not _is_static_bool(m)]
  if bad:
    raise ValueError(
      "the `shared` mask must hold static Python bools (it decides the program's "
      f"structure); non-bool leaves at {', '.join(bad[:5])}"
    )
  used, flags = set(), []
  for path, _ in _paths(reference):
    prefix = next((path[:n] for n in range(len(path), -1, -1) if path[:n] in entries), None)
    if prefix is None:
      raise ValueError(
        f"the `shared` mask does not cover the parameter at {_show(path)}: give a bool for "
        f"it or for one of its parents (mask entries: {', '.join(_show(p) for p in list(entries)[:8])})"
      )
    used.add(prefix)
    flags.append(bool(entries[prefix]))
  unused = [_show(p) for p in entries if p not in used]
  if unused:
    raise ValueError(
      f"the `shared` mask has entries that match no parameter: {', '.join(unused[:5])}"
    )
  return jax.tree.unflatten(structure, flags)
