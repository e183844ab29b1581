"""Single-task baseline: K independent models, one per task, trained side by side.

Each task has its own input embedding, bottom MLP and tower; no parameter is reached by more
than one task's loss, so :meth:`SingleTask.shared_mask` is all ``False``. The K parameter sets
are disjoint, so training on the (equally weighted) sum of the K losses with a per-parameter
optimizer such as Adam is K separate single-task trainings on the same batches, with the same
early stopping (on the mean validation AUC) and optimizer settings (a constant weight on a loss
changes Adam's steps only through its ``eps``): the reference every multi-task model is
measured against.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Tower


class TaskModel(nnx.Module):
  """One task's complete model: input embedding, bottom MLP and tower, to one logit.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    embed_dim: embedding width.
    bottom_dims: widths of the bottom MLP.
    tower_dims: widths of the tower's MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``net(categorical, numerical) -> logits (B,)``.

  Example:
    >>> from flax import nnx
    >>> net = TaskModel((5, 7), 2, embed_dim=4, bottom_dims=(8,), tower_dims=(4,),
    ...                 rngs=nnx.Rngs(0))
    >>> net(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6,)
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    *,
    embed_dim: int,
    bottom_dims: Sequence[int],
    tower_dims: Sequence[int],
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    self.bottom = MLP(self.features.out_dim, bottom_dims, norm=norm, dropout=dropout, rngs=rngs)
    self.tower = Tower(self.bottom.out_dim, tower_dims, norm=norm, dropout=dropout, rngs=rngs)

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    return self.tower(self.bottom(self.features(categorical, numerical)))


class SingleTask(MultiTaskModel):
  """Single-task baseline: one independent :class:`TaskModel` per task in one module.

  Nothing is shared: ``shared_mask()`` is ``False`` on every leaf. A balancing method therefore
  has nothing to balance (its Gram matrix would be empty); ``pub-optax train --model
  single_task`` runs only the methods that need no shared parameter, such as ``equal``.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width of every task's embeddings.
    bottom_dims: widths of every task's bottom MLP (as Shared-Bottom's shared one).
    tower_dims: widths of every task's tower MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``; task ``k``'s parameters
    are ``nnx.state(model, nnx.Param)["tasks"][k]``.

  Example:
    >>> import jax
    >>> from flax import nnx
    >>> m = SingleTask((5, 7), 2, 3, embed_dim=4, bottom_dims=(8,), tower_dims=(4,),
    ...                rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 3)
    >>> any(jax.tree.leaves(m.shared_mask()))
    False

  References:
    Caruana, "Multitask Learning", Machine Learning 28, 1997 (single-task nets as the baseline
    of multi-task learning).
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    bottom_dims: Sequence[int] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    self.tasks = nnx.List(
      [
        TaskModel(
          cardinalities,
          n_numerical,
          embed_dim=embed_dim,
          bottom_dims=bottom_dims,
          tower_dims=tower_dims,
          norm=norm,
          dropout=dropout,
          rngs=rngs,
        )
        for _ in range(self.n_tasks)
      ]
    )

  def _is_shared(self, path: tuple) -> bool:
    return False

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    return jnp.stack([task(categorical, numerical) for task in self.tasks], axis=-1)
