"""What every multi-task ranking model shares: task-count check and the shared-parameter mask.

A parameter is *shared* (mask ``True``) when more than one task's loss can send gradient to it,
and *task-specific* (``False``) when only its own task's loss can. Each model states this with
:meth:`MultiTaskModel._is_shared`, a rule on the parameter's path in ``nnx.state(model,
nnx.Param)``; the tests check every rule against per-task gradients. Note that this follows the
data flow, not module names: ESMM's CTR tower also feeds the CTCVR output, PLE's task experts
below the last level feed the shared gate, and AITM's towers feed the next task through the
information transfer, so all of those are shared.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx


def _key_name(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


class MultiTaskModel(nnx.Module):
  """Base class of the ranking models: ``model(categorical, numerical) -> (B, n_tasks)`` logits."""

  n_tasks: int

  @staticmethod
  def _check_n_tasks(n_tasks: int) -> int:
    if int(n_tasks) != n_tasks or n_tasks < 1:
      raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
    return int(n_tasks)

  def _is_shared(self, path: tuple) -> bool:
    """Whether the parameter at ``path`` (keys of ``nnx.state(self, nnx.Param)``) is shared."""
    raise NotImplementedError

  def shared_mask(self):
    """Boolean mask of the shared parameters, shaped like ``nnx.state(self, nnx.Param)``.

    Returns:
      A pytree with exactly the tree structure of ``nnx.state(self, nnx.Param)`` whose leaves
      are Python bools: ``True`` where more than one task's loss reaches the parameter
      (embeddings, bottoms, shared experts, ...), ``False`` for task-specific parameters.

    Example:
      >>> from flax import nnx
      >>> from pub_optax.ranking.models import MMoE
      >>> m = MMoE((5, 7), 2, 2, embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,),
      ...          rngs=nnx.Rngs(0))
      >>> mask = m.shared_mask()
      >>> bool(mask["features"]["tables"][0]["embedding"].get_value())
      True
      >>> bool(mask["towers"][0]["out"]["kernel"].get_value())
      False
    """
    params = nnx.state(self, nnx.Param)

    def leaf(path, _):
      keys = tuple(_key_name(k) for k in path)
      if keys and keys[-1] == "value":  # the Variable's own pytree node
        keys = keys[:-1]
      return bool(self._is_shared(keys))

    return jax.tree_util.tree_map_with_path(leaf, params)
