"""AITM: per-task towers chained by Adaptive Information Transfer (Xi et al., KDD 2021).

Tasks form a funnel (impression -> click -> conversion ...). Task ``t`` has a bottom MLP giving
``q_t``; from ``t >= 1`` an *info* block maps the previous task's representation to ``p_{t-1}``
and an :class:`AIT` attention over ``{p_{t-1}, q_t}`` gives ``z_t`` (``z_0 = q_0``); an output
tower maps ``z_t`` to task ``t``'s logit.

Output convention: as in the paper, output ``t`` is the logit of the entire-space probability of
reaching step ``t`` of the funnel, ``P(y_1 = ... = y_t = 1 | x)`` — for (click, conversion) the
second output is the CTCVR logit, trained directly on the click-and-convert label over all
impressions (no product as in ESMM). The paper adds a behavioural expectation calibrator,
:func:`calibration_penalty`, that penalises ``σ(logit_t) > σ(logit_{t-1})``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pub_optax.ranking.models.base import MultiTaskModel
from pub_optax.ranking.models.layers import MLP, FeatureEmbedding, Tower


class AIT(nnx.Module):
  """Adaptive Information Transfer: self-attention over the transferred and the own representation.

  ``z = Σ_u w_u h1(u)`` over ``u ∈ {p, q}`` with ``w = softmax_u(<h2(u), h3(u)> / sqrt(d))``.

  Args:
    dim: width ``d`` of ``p``, ``q`` and ``z``.
    rngs: NNX random streams.

  Returns:
    A module ``ait(p, q) -> z`` on ``(B, d)`` arrays.

  Example:
    >>> from flax import nnx
    >>> AIT(4, rngs=nnx.Rngs(0))(jnp.ones((3, 4)), jnp.zeros((3, 4))).shape
    (3, 4)
  """

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.to_value = nnx.Linear(dim, dim, rngs=rngs)
    self.to_key = nnx.Linear(dim, dim, rngs=rngs)
    self.to_query = nnx.Linear(dim, dim, rngs=rngs)

  def __call__(self, p: jax.Array, q: jax.Array) -> jax.Array:
    u = jnp.stack([p, q], axis=1)  # (B, 2, d)
    scores = jnp.sum(self.to_key(u) * self.to_query(u), axis=-1) / jnp.sqrt(u.shape[-1])
    weights = jax.nn.softmax(scores, axis=1)
    return jnp.einsum("bu,bud->bd", weights, self.to_value(u))


class AITMTask(nnx.Module):
  """The modules of one AITM task: bottom MLP, incoming info block and AIT (t >= 1), tower.

  Args:
    in_dim: width of the shared input.
    bottom_dims: widths of the bottom MLP.
    tower_dims: widths of the output tower's MLP.
    receives: whether this task receives a transfer from the previous task.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A container module; :class:`AITM` wires the parts.

  Example:
    >>> from flax import nnx
    >>> AITMTask(4, (8,), (4,), receives=True, rngs=nnx.Rngs(0)).bottom.out_dim
    8
  """

  def __init__(
    self,
    in_dim: int,
    bottom_dims: Sequence[int],
    tower_dims: Sequence[int],
    *,
    receives: bool,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.bottom = MLP(in_dim, bottom_dims, norm=norm, dropout=dropout, rngs=rngs)
    d = self.bottom.out_dim
    self.info = MLP(d, (d,), norm=norm, dropout=dropout, rngs=rngs) if receives else None
    self.ait = AIT(d, rngs=rngs) if receives else None
    self.tower = Tower(d, tower_dims, norm=norm, dropout=dropout, rngs=rngs)


def calibration_penalty(logits: jax.Array) -> jax.Array:
  """AITM's behavioural expectation calibrator: mean of ``Σ_t relu(σ(l_t) - σ(l_{t-1}))``.

  Args:
    logits: ``(B, n_tasks)`` model outputs.

  Returns:
    A scalar, zero when every predicted step probability is at most the previous one (the paper
    adds it to the loss with a weight, 0.6 in its experiments).

  Example:
    >>> float(calibration_penalty(jnp.array([[0.0, 10.0], [0.0, -10.0]])))  # doctest: +ELLIPSIS
    0.249...
  """
  probs = jax.nn.sigmoid(logits)
  return jnp.mean(jnp.sum(jax.nn.relu(probs[:, 1:] - probs[:, :-1]), axis=-1))


class AITM(MultiTaskModel):
  """Adaptive Information Transfer Multi-task model for sequential (funnel) tasks.

  See the module docstring for the architecture and the output convention. With
  ``detach_transfer=False`` (the paper) task ``t``'s loss also trains the bottoms, info blocks
  and AITs of tasks ``< t`` through the transfer, so those of every task but the last are
  shared (mask ``True``); only the output towers and the last task's modules are task-specific.
  ``detach_transfer=True`` stops the gradient at the transfer, making every task's modules
  task-specific.

  Args:
    cardinalities: ids per categorical field.
    n_numerical: number of dense features (may be 0).
    n_tasks: number of sequential tasks, >= 1.
    embed_dim: embedding width.
    bottom_dims: widths of every task's bottom MLP.
    tower_dims: widths of every task's output tower MLP.
    detach_transfer: stop gradients from flowing through the transfer into earlier tasks.
    norm: ``"batch"``, ``"layer"`` or ``None``.
    dropout: dropout rate.
    rngs: NNX random streams.

  Returns:
    A module ``model(categorical, numerical) -> logits (B, n_tasks)``.

  Example:
    >>> from flax import nnx
    >>> m = AITM((5, 7), 2, 3, embed_dim=4, bottom_dims=(8,), tower_dims=(4,), rngs=nnx.Rngs(0))
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
    detach_transfer: bool = False,
    norm: str | None = "batch",
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    self.n_tasks = self._check_n_tasks(n_tasks)
    self.detach_transfer = bool(detach_transfer)
    self.features = FeatureEmbedding(cardinalities, n_numerical, embed_dim, rngs=rngs)
    self.tasks = nnx.List(
      [
        AITMTask(
          self.features.out_dim,
          bottom_dims,
          tower_dims,
          receives=t > 0,
          norm=norm,
          dropout=dropout,
          rngs=rngs,
        )
        for t in range(self.n_tasks)
      ]
    )

  def _is_shared(self, path: tuple) -> bool:
    if path[0] == "features":
      return True
    task, part = path[1], path[2]
    return part != "tower" and not self.detach_transfer and task < self.n_tasks - 1

  def __call__(self, categorical: jax.Array, numerical: jax.Array | None) -> jax.Array:
    x = self.features(categorical, numerical)
    logits, z = [], None
    for task in self.tasks:
      q = task.bottom(x)
      if z is None:
        z = q
      else:
        prev = jax.lax.stop_gradient(z) if self.detach_transfer else z
        z = task.ait(task.info(prev), q)
      logits.append(task.tower(z))
    return jnp.stack(logits, axis=-1)
