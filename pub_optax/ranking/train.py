"""Training and evaluating a multi-task ranking model with any pub_optax method.

The step is functional and jitted end to end: ``split`` the NNX model once, compute
the per-task losses with one forward pass, their gradients with one vmapped VJP
(:func:`pub_optax.value_and_task_grads`), hand them to the transformation, merge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.losses
from flax import nnx

from pub_optax._training import make_train_step
from pub_optax.ranking.data.batching import iterate_batches, pad_batch
from pub_optax.ranking.data.types import RankingData
from pub_optax.ranking.metrics import task_metrics
from pub_optax.ranking.models import apply, split


def task_losses(logits: jax.Array, labels: jax.Array, calibration_weight: float = 0.0) -> jax.Array:
  """Mean binary cross-entropy per task, ``(B, K)`` logits and labels -> ``(K,)``.

  With ``calibration_weight > 0`` (AITM's behavioural expectation calibrator) task
  ``t`` also pays ``w · mean(relu(p_t − p_{t−1}))``: a later funnel step may not be
  predicted likelier than the one before it.

  Example:
    >>> import jax.numpy as jnp
    >>> [round(float(x), 4) for x in task_losses(jnp.zeros((4, 2)), jnp.ones((4, 2)))]
    [0.6931, 0.6931]
  """
  losses = jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, labels), axis=0)
  if calibration_weight:
    probs = jax.nn.sigmoid(logits)
    excess = jnp.mean(jax.nn.relu(probs[:, 1:] - probs[:, :-1]), axis=0)
    losses = losses.at[1:].add(calibration_weight * excess)
  return losses


@dataclasses.dataclass
class Trainer:
  """Jitted train and evaluation steps for one model and one transformation.

  Args:
    model: an NNX multi-task model (``model(categorical, numerical) -> (B, K)`` logits).
    tx: a transformation taking stacked per-task gradients, e.g. ``pub_adam`` or
      ``pub_optax.make_method(...)``.
    calibration_weight: AITM's calibrator weight (0 for other models).
    sparse_embeddings: differentiate the embedding tables at the batch's rows only
      (:meth:`~pub_optax.ranking.models.MultiTaskModel.embedding_lookups`): the
      same training up to rounding with no dense per-task table gradients, for
      transformations built on :func:`pub_optax.balance` with a coordinate-wise inner
      optimizer (every method with ``METHODS[name].row_sparse``).

  Example:
    >>> import numpy as np
    >>> from flax import nnx
    >>> import pub_optax
    >>> from pub_optax.ranking.models import build_model
    >>> model = build_model("mmoe", (5, 7), 3, 2, rngs=nnx.Rngs(0), embed_dim=4,
    ...                     n_experts=2, expert_dims=(8,), tower_dims=(4,))
    >>> trainer = Trainer(model, pub_optax.pub_adam(1e-3, num_tasks=2, shared=model.shared_mask()))
    >>> batch = {"categorical": np.zeros((8, 2), np.int32), "numerical": np.ones((8, 3), np.float32),
    ...          "labels": np.ones((8, 2), np.float32)}
    >>> out = trainer.train_step(trainer.params, trainer.rest, trainer.tx.init(trainer.params), batch)
    >>> out.losses.shape, out.weights.shape
    ((2,), (2,))
  """

  model: nnx.Module
  tx: optax.GradientTransformation
  calibration_weight: float = 0.0
  sparse_embeddings: bool = False

  def __post_init__(self):
    self.model.train()
    self.train_graph, self.params, self.rest = split(self.model)
    self.model.eval()
    self.eval_graph, _, _ = split(self.model)
    self.model.train()
    self.shared_mask = self.model.shared_mask()
    lookups = self.model.embedding_lookups() if self.sparse_embeddings else None
    self.train_step = jax.jit(make_train_step(self.tx, self.shared_mask, self._losses, lookups))
    self.eval_step = jax.jit(self._eval_step)

  def _losses(self, params, rest, batch):
    logits, new_rest = apply(
      self.train_graph, params, rest, batch["categorical"], batch["numerical"]
    )
    return task_losses(logits, batch["labels"], self.calibration_weight), new_rest

  def _eval_step(self, params, rest, batch):
    logits, _ = apply(self.eval_graph, params, rest, batch["categorical"], batch["numerical"])
    return logits

  def evaluate(self, params, rest, data: RankingData, batch_size: int) -> dict:
    """Task metrics on every row of ``data`` (the last partial batch is padded, never dropped)."""
    logits = []
    for batch in iterate_batches(data, batch_size, shuffle=False):
      padded, mask = pad_batch(batch, batch_size)
      out = np.asarray(self.eval_step(params, rest, padded))
      logits.append(out[mask])
    return task_metrics(data.labels, np.concatenate(logits), data.task_names, on_single_class="nan")


def train_batches(data: RankingData, batch_size: int, seed: int, epoch: int) -> Iterator[dict]:
  """Shuffled training batches of a static size (a last partial batch is skipped in training only)."""
  return iterate_batches(
    data, batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=len(data) >= batch_size
  )
