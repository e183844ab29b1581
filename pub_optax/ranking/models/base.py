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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax._sparse import lookup_rows
from pub_optax.ranking.models.layers import FeatureEmbedding


def _key_name(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _param_keys(path) -> tuple:
  """The keys of a parameter's pytree path, without the Variable's own ``value`` node."""
  keys = tuple(_key_name(k) for k in path)
  return keys[:-1] if keys and keys[-1] == "value" else keys


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
      return bool(self._is_shared(_param_keys(path)))

    return jax.tree_util.tree_map_with_path(leaf, params)

  def _input_cardinalities(self) -> tuple[int, ...]:
    """The cardinalities of the model's input embeddings (all of them must agree)."""
    found = {
      tuple(m.cardinalities) for _, m in nnx.iter_modules(self) if isinstance(m, FeatureEmbedding)
    }
    if len(found) != 1:
      raise ValueError(f"expected input embeddings of one set of cardinalities, found {found}")
    return found.pop()

  def embedding_lookups(self) -> Callable:
    """Row-sparse embedding gradients for :func:`pub_optax.make_train_step`'s ``lookups``.

    Returns ``lookups(params, batch) -> (compact_params, compact_batch, to_task_grads)``:
    every table with more ids than the batch has rows is replaced by the rows the batch
    looks up (:func:`pub_optax.lookup_rows`) and the batch's ids by positions in them, so
    the per-task gradients of the table are ``(K, batch, dim)`` instead of ``(K, ids, dim)``;
    ``to_task_grads`` wraps them as :class:`pub_optax.RowSparse`. Smaller tables stay dense.
    A model with several input embeddings (one per task, as in
    :class:`~pub_optax.ranking.models.SingleTask`) has every one of them compacted alike.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from pub_optax.ranking.models import MMoE, split
      >>> m = MMoE((5, 700), 2, 2, embed_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(4,),
      ...          rngs=nnx.Rngs(0))
      >>> _, params, _ = split(m)
      >>> batch = {"categorical": jnp.array([[1, 650], [2, 3], [1, 650]])}
      >>> compact, cbatch, _ = m.embedding_lookups()(params, batch)
      >>> compact["features"]["tables"][1]["embedding"].shape, cbatch["categorical"][:, 1].tolist()
      ((3, 4), [1, 0, 1])
    """
    cardinalities = self._input_cardinalities()

    def table_of(path) -> Any:  # the field of a ``...features.tables[f].embedding`` leaf
      keys = _param_keys(path)
      if len(keys) >= 4 and keys[-4:-2] == ("features", "tables") and keys[-1] == "embedding":
        return keys[-2]
      return None

    def lookups(params, batch):
      categorical = jnp.asarray(batch["categorical"])
      found = {
        f: lookup_rows(categorical[:, f], c)
        for f, c in enumerate(cardinalities)
        if c > categorical.shape[0]
      }

      def at_tables(fn, tree):
        return jax.tree_util.tree_map_with_path(
          lambda path, x: fn(found[table_of(path)], x) if table_of(path) in found else x, tree
        )

      columns = [
        found[f].ids if f in found else categorical[:, f] for f in range(len(cardinalities))
      ]
      compact_batch = dict(batch, categorical=jnp.stack(columns, axis=1))
      return (
        at_tables(lambda lookup, table: lookup.gather(table), params),
        compact_batch,
        lambda grads: at_tables(lambda lookup, g: lookup.task_grads(g), grads),
      )

    return lookups
