"""Shared-Bottom: one MLP on the shared input, then one tower per task (Caruana, 1997)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Tower


class SharedBottom(MultiTaskModel):
  """Shared-Bottom multi-task ranking model.

  Shared: embeddings, dense projection and the bottom MLP. Task-specific: the towers.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width.
    bottom_dims: widths of the shared bottom MLP.
    tower_dims: widths of every task tower's MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = SharedBottom((5, 7), 2, 3, embed_dim=4, bottom_dims=(8,), tower_dims=(4,),
    ...                  rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 3)
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
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    self.bottom = MLP(self.features.out_dim, bottom_dims, norm=norm, dropout=dropout, rngs=rngs)
    self.towers = nnx.List(
      [
        Tower(self.bottom.out_dim, tower_dims, norm=norm, dropout=dropout, rngs=rngs)
        for _ in range(self.n_tasks)
      ]
    )

  def _is_shared(self, path: tuple) -> bool:
    return path[0] in ("features", "bottom")

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    h = self.bottom(self.features(categorical, numerical))
    return jnp.stack([tower(h) for tower in self.towers], axis=-1)
