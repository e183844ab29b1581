"""OMoE: shared experts mixed by one softmax gate for all tasks (Ma et al., KDD 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Gate, Tower


class OMoE(MultiTaskModel):
  """One-gate Mixture-of-Experts ranking model, the MMoE paper's baseline.

  The input embedding feeds ``n_experts`` expert MLPs; one softmax gate on the same input mixes
  their outputs into a single representation that every task tower reads. Shared: embeddings,
  dense projection, experts and the gate. Task-specific: the towers. With one expert it is
  Shared-Bottom (the gate's weight is 1).

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width.
    n_experts: number of shared experts.
    expert_dims: widths of every expert MLP.
    tower_dims: widths of every task tower's MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = OMoE((5, 7), 2, 2, embed_dim=4, n_experts=3, expert_dims=(8,), tower_dims=(4,),
    ...          rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 2)

  References:
    Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018 (OMoE is its one-gate baseline).
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    n_experts: int = 8,
    expert_dims: Sequence[int] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    if n_experts < 1:
      raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    d_in = self.features.out_dim
    self.experts = nnx.List(
      [MLP(d_in, expert_dims, norm=norm, dropout=dropout, rngs=rngs) for _ in range(n_experts)]
    )
    d_out = self.experts[0].out_dim
    self.gate = Gate(d_in, n_experts, rngs=rngs)
    self.towers = nnx.List(
      [Tower(d_out, tower_dims, norm=norm, dropout=dropout, rngs=rngs) for _ in range(self.n_tasks)]
    )

  def _is_shared(self, path: tuple) -> bool:
    return path[0] in ("features", "experts", "gate")

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    x = self.features(categorical, numerical)
    experts = jnp.stack([expert(x) for expert in self.experts], axis=1)  # (B, E, D)
    mixed = self.gate(x, experts)
    return jnp.stack([tower(mixed) for tower in self.towers], axis=-1)
