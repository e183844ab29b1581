"""Cross-stitch networks: one column per task, mixed after every layer (Misra et al., CVPR 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Tower


def stitch_init(n_tasks: int, self_weight: float = 0.9) -> jax.Array:
  """The initial ``(K, K)`` cross-stitch matrix: ``self_weight`` on the diagonal and the rest of
  every row spread evenly over the other tasks (rows sum to 1; ``[[1.0]]`` for one task).

  Example:
    >>> [[round(a, 3) for a in row] for row in stitch_init(3).tolist()]
    [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]]
  """
  if n_tasks == 1:
    return jnp.ones((1, 1), jnp.float32)
  other = (1.0 - self_weight) / (n_tasks - 1)
  return (
    jnp.full((n_tasks, n_tasks), other, jnp.float32).at[jnp.diag_indices(n_tasks)].set(self_weight)
  )


class CrossStitch(nnx.Module):
  """A cross-stitch unit: column ``k``'s new activation is ``Σ_j A[k, j] h_j``.

  One learned scalar per pair of tasks (the paper's fully connected form), shared by every unit
  of the layer.

  Args:
    n_tasks: number of columns K.
    self_weight: initial diagonal of ``A`` (the paper suggests 0.9; off-diagonal entries start
      at ``(1 - self_weight) / (K - 1)``).

  Returns:
    A module ``stitch(columns) -> columns`` on a list of K ``(B, D)`` activations.

  Example:
    >>> mixed = CrossStitch(2)([jnp.ones((1, 1)), jnp.zeros((1, 1))])
    >>> [round(float(h[0, 0]), 3) for h in mixed]
    [0.9, 0.1]
  """

  def __init__(self, n_tasks: int, self_weight: float = 0.9):
    self.matrix = nnx.Param(stitch_init(n_tasks, self_weight))

  def __call__(self, columns: Sequence[jax.Array]) -> list[jax.Array]:
    mixed = jnp.einsum("kj,jbd->kbd", self.matrix[...], jnp.stack(columns))
    return list(mixed)


class CrossStitchNet(MultiTaskModel):
  """Cross-stitch multi-task ranking model.

  Over the shared input embedding every task has its own column, an MLP of ``column_dims``; a
  cross-stitch unit (a learned K×K matrix, initialised near identity) mixes the K columns'
  activations after every hidden layer, the last one included as in the paper (the stitched
  output of the last layer feeds the task towers). Every column is therefore reached by every
  task's loss through the stitch units.

  Shared: embeddings, dense projection, the columns and the stitch matrices. Task-specific:
  the towers. With identity stitch matrices the columns are K independent single-task MLPs
  over the shared embeddings (only then would a column be task-specific).

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width.
    column_dims: widths of every task's column, one cross-stitch unit after each.
    tower_dims: widths of every task tower's MLP.
    self_weight: initial diagonal of the stitch matrices (0.9, the paper's suggestion).
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = CrossStitchNet((5, 7), 2, 3, embed_dim=4, column_dims=(8, 8), tower_dims=(4,),
    ...                    rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 3)

  References:
    Misra, Shrivastava, Gupta and Hebert, "Cross-stitch Networks for Multi-task Learning",
    CVPR 2016. LibMTL's ``Cross_stitch`` architecture (Lin and Zhang, JMLR 2023).
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    column_dims: Sequence[int] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    self_weight: float = 0.9,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    if not column_dims:
      raise ValueError("column_dims needs at least one hidden width")
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    layers, in_dim = [], self.features.out_dim
    for width in column_dims:
      layers.append(
        nnx.List(
          [
            MLP(in_dim, (width,), norm=norm, dropout=dropout, rngs=rngs)
            for _ in range(self.n_tasks)
          ]
        )
      )
      in_dim = width
    self.columns = nnx.List(layers)  # columns[layer][task]
    self.stitches = nnx.List([CrossStitch(self.n_tasks, self_weight) for _ in column_dims])
    self.towers = nnx.List(
      [
        Tower(in_dim, tower_dims, norm=norm, dropout=dropout, rngs=rngs)
        for _ in range(self.n_tasks)
      ]
    )

  def _is_shared(self, path: tuple) -> bool:
    return path[0] in ("features", "columns", "stitches")

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    x = self.features(categorical, numerical)
    hidden = [x] * self.n_tasks
    for blocks, stitch in zip(self.columns, self.stitches):
      hidden = stitch([block(h) for block, h in zip(blocks, hidden)])
    return jnp.stack([tower(h) for tower, h in zip(self.towers, hidden)], axis=-1)
