"""PLE: stacked Customized Gate Control layers of shared and per-task experts (Tang et al., RecSys 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Gate, Tower


class CGC(nnx.Module):
  """One extraction level: shared experts, per-task experts, per-task gates, optional shared gate.

  Task ``k``'s gate mixes task ``k``'s experts and the shared experts, selected by task ``k``'s
  input; the shared gate (all levels but the last) mixes every expert, selected by the shared
  input, to form the next level's shared input.

  Args:
    in_dim: width of every input.
    dims: widths of every expert MLP of this level.
    n_tasks: number of tasks.
    n_shared_experts: number of shared experts.
    n_task_experts: number of experts per task.
    shared_output: whether to build the shared gate (False on the last level).
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``cgc(task_inputs, shared_input) -> (task_outputs, shared_output or None)``.

  Example:
    >>> from flax import nnx
    >>> cgc = CGC(4, (8,), 2, 1, 1, shared_output=True, rngs=nnx.Rngs(0))
    >>> outs, shared = cgc([jnp.ones((3, 4))] * 2, jnp.ones((3, 4)))
    >>> outs[1].shape, shared.shape
    ((3, 8), (3, 8))
  """

  def __init__(
    self,
    in_dim: int,
    dims: Sequence[int],
    n_tasks: int,
    n_shared_experts: int,
    n_task_experts: int,
    *,
    shared_output: bool,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    def expert():
      return MLP(in_dim, dims, norm=norm, dropout=dropout, rngs=rngs)

    self.shared_experts = nnx.List([expert() for _ in range(n_shared_experts)])
    self.task_experts = nnx.List(
      [nnx.List([expert() for _ in range(n_task_experts)]) for _ in range(n_tasks)]
    )
    self.task_gates = nnx.List(
      [Gate(in_dim, n_task_experts + n_shared_experts, rngs=rngs) for _ in range(n_tasks)]
    )
    n_all = n_tasks * n_task_experts + n_shared_experts
    self.shared_gate = Gate(in_dim, n_all, rngs=rngs) if shared_output else None
    self.out_dim = self.shared_experts[0].out_dim

  def __call__(self, task_inputs: Sequence[jax.Array], shared_input: jax.Array):
    shared = [e(shared_input) for e in self.shared_experts]
    task = [[e(x) for e in experts] for x, experts in zip(task_inputs, self.task_experts)]
    outputs = [
      gate(x, jnp.stack(own + shared, axis=1))
      for x, own, gate in zip(task_inputs, task, self.task_gates)
    ]
    shared_out = None
    if self.shared_gate is not None:
      every = [e for own in task for e in own] + shared
      shared_out = self.shared_gate(shared_input, jnp.stack(every, axis=1))
    return outputs, shared_out


class PLE(MultiTaskModel):
  """Progressive Layered Extraction ranking model: stacked :class:`CGC` levels, then towers.

  Level ``l``'s experts are MLPs of widths ``expert_dims[l]`` (an int means one block), so the
  number of levels is ``len(expert_dims)``. The default ``(512, 256)`` gives two levels whose
  experts are one block of 512 and of 256 units, the layout of the paper's public code; pass
  e.g. ``((512, 256), (256,), (128,))`` for three levels.

  Shared (mask ``True``): embeddings, dense projection, shared experts and shared gates, and —
  because they feed the shared gate — task experts of every level but the last, and task gates
  of every level but the last two. Task-specific: the remaining task experts and gates and the
  towers.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of tasks, >= 1.
    embed_dim: embedding width.
    n_shared_experts: shared experts per level.
    n_task_experts: experts per task per level.
    expert_dims: per-level expert widths (int or sequence of ints per level).
    tower_dims: widths of every task tower's MLP.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = PLE((5, 7), 2, 2, embed_dim=4, n_shared_experts=1, n_task_experts=1,
    ...         expert_dims=(8, 8), tower_dims=(4,), rngs=nnx.Rngs(0))
    >>> m(jnp.zeros((6, 2), jnp.int32), jnp.ones((6, 2))).shape
    (6, 2)
  """

  def __init__(
    self,
    cardinalities: Sequence[int],
    n_numerical: int,
    n_tasks: int,
    *,
    embed_dim: int = 128,
    n_shared_experts: int = 4,
    n_task_experts: int = 4,
    expert_dims: Sequence[int | Sequence[int]] = (512, 256),
    tower_dims: Sequence[int] = (128, 64),
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    if n_shared_experts < 1 or n_task_experts < 0:
      raise ValueError(
        "PLE needs n_shared_experts >= 1 and n_task_experts >= 0, got "
        f"{n_shared_experts} and {n_task_experts}"
      )
    if not expert_dims:
      raise ValueError("expert_dims must name at least one level")
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    levels, d_in = [], self.features.out_dim
    for l, dims in enumerate(expert_dims):
      dims = (dims,) if isinstance(dims, int) else tuple(dims)
      levels.append(
        CGC(
          d_in,
          dims,
          self.n_tasks,
          n_shared_experts,
          n_task_experts,
          shared_output=l < len(expert_dims) - 1,
          norm=norm,
          dropout=dropout,
          rngs=rngs,
        )
      )
      d_in = levels[-1].out_dim
    self.levels = nnx.List(levels)
    self.towers = nnx.List(
      [Tower(d_in, tower_dims, norm=norm, dropout=dropout, rngs=rngs) for _ in range(self.n_tasks)]
    )

  def _is_shared(self, path: tuple) -> bool:
    if path[0] != "levels":
      return path[0] == "features"
    level, part, n_levels = path[1], path[2], len(self.levels)
    if part == "task_experts":
      return level < n_levels - 1
    if part == "task_gates":
      return level < n_levels - 2
    return True  # shared experts and shared gate

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    x = self.features(categorical, numerical)
    task_inputs, shared = [x] * self.n_tasks, x
    for level in self.levels:
      task_inputs, shared = level(task_inputs, shared)
    return jnp.stack([tower(h) for h, tower in zip(task_inputs, self.towers)], axis=-1)
