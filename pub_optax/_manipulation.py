"""Update-manipulation baselines: AdaTask (per-task Adam moments) and Clippy-Adam (clipped updates).

* :func:`adatask` keeps one Adam state per task on the shared parameters and sums
  the per-task Adam updates. It is not a new mechanism: it is
  :func:`pub_optax.balance` with ``per_task_state=True`` and the all-ones
  weighting at update level.
* :func:`scale_by_clippy_adam` is Adam whose update is shrunk, one scalar per
  tensor, so that no coordinate moves by more than ``λ_rel |w| + λ_abs``; it is a
  plain optax transformation, usable alone (:func:`clippy_adam`), on the summed
  task gradient (``make_method("clippy_adam", ...)``) or as PUB's per-task
  direction (``pub(scale_by_clippy_adam(lr), lr, num_tasks=K)``).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from pub_optax._balance import SharedSpec, balance
from pub_optax.weightings._simple import ones

Array = jax.Array


def adatask(
  learning_rate: optax.ScalarOrSchedule,
  b1: chex.Numeric = 0.9,
  b2: chex.Numeric = 0.999,
  eps: chex.Numeric = 1e-8,
  weight_decay: chex.Numeric = 0.0,
  *,
  num_tasks: int,
  shared: SharedSpec = None,
  weight_decay_mask: SharedSpec = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaTask: Adam with separate moments for every task on the shared parameters.

  For task k, ``m_k ← b1 m_k + (1−b1) g_k``, ``v_k ← b2 v_k + (1−b2) g_k²`` and the
  shared parameters move by ``−η Σ_k m̂_k / (sqrt(v̂_k) + eps)``; task-specific
  parameters get their own task's Adam step (the other tasks' gradients, and so
  their updates, are zero there). Implemented as
  ``balance(optax.scale_by_adam(b1, b2, eps), ones(), η, level="update",
  per_task_state=True, scaling="raw")``; PUB on top of per-task moments is
  ``pub(optax.scale_by_adam(), η, num_tasks=K, per_task_state=True)``.

  Args:
    learning_rate: float or schedule.
    b1, b2, eps: Adam's hyper-parameters (per task).
    weight_decay: decoupled weight decay, applied once per step.
    num_tasks: K.
    shared: which leaves are shared (see :func:`pub_optax.balance`).
    weight_decay_mask: which leaves decay.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` taking per-task gradients
    ``(K, *param_shape)``; memory K× Adam's.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import adatask
    >>> tx = adatask(0.1, num_tasks=2)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([[1.0, 0.0], [-5.0, 2.0]]), state, params)
    >>> [round(float(u), 4) for u in updates]  # first Adam steps: -0.1·(sign g_1 + sign g_2)
    [-0.0, -0.1]

  References:
    Yang et al., "AdaTask: A Task-Aware Adaptive Learning Rate Approach to
    Multi-Task Learning", AAAI 2023.
  """
  return balance(
    optax.scale_by_adam(b1, b2, eps),
    ones(),
    learning_rate,
    num_tasks=num_tasks,
    level="update",
    shared=shared,
    scaling="raw",
    per_task_state=True,
    weight_decay=weight_decay,
    weight_decay_mask=weight_decay_mask,
  )


def _clip_factor(update: Array, param: Array, lr: Array, lambda_rel, lambda_abs) -> Array:
  """Largest r in [0, 1] with ``r·|lr·u| ≤ λ_rel|w| + λ_abs`` on every coordinate of one tensor."""
  acc = jnp.promote_types(update.dtype, jnp.float32)
  step = jnp.abs(lr * update.astype(acc))
  bound = lambda_rel * jnp.abs(param.astype(acc)) + lambda_abs
  moving = step > 0
  ratio = jnp.where(moving, bound / jnp.where(moving, step, 1.0), jnp.inf)
  return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf)).astype(acc)


def scale_by_clippy_adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: chex.Numeric = 0.9,
  b2: chex.Numeric = 0.999,
  eps: chex.Numeric = 1e-8,
  lambda_rel: chex.Numeric = 0.5,
  lambda_abs: chex.Numeric = 1e-2,
) -> optax.GradientTransformation:
  r"""Adam direction shrunk per tensor so that the step ``η·r·u`` stays within ``λ_rel|w| + λ_abs``.

  With Adam's bias-corrected direction ``u = m̂ / (sqrt(v̂) + eps)`` and the
  parameters ``w`` of a tensor, Clippy computes one factor per tensor::

    r = min(1, min_j (λ_rel |w_j| + λ_abs) / (η |u_j|))

  and outputs ``r·u`` (learning-rate free; the alias :func:`clippy_adam` scales by
  ``−η``). So ``|η r u_j| ≤ λ_rel|w_j| + λ_abs`` on every coordinate, and ``r = 1``
  (plain Adam) whenever the bound is not binding. The learning rate is needed
  because the bound is on the applied step, hence the argument.

  The moments: as in Clippy's reference implementation (TensorFlow Recommenders'
  ``ClippyAdagrad`` with its default ``clip_accumulator_update=False``), the
  moments are updated with the *unclipped* gradient; only the applied update is
  shrunk. (The paper builds Clippy on Adagrad; this is its Adam version.)

  Args:
    learning_rate: η, float or schedule (evaluated at the step count).
    b1, b2, eps: Adam's hyper-parameters.
    lambda_rel: relative threshold λ_rel (0.5 in the paper's experiments).
    lambda_abs: absolute threshold λ_abs (1e-2 in the paper's experiments).

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``; its
    state is optax's ``ScaleByAdamState``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import scale_by_clippy_adam
    >>> tx = scale_by_clippy_adam(1.0, lambda_rel=0.1, lambda_abs=0.0)
    >>> params = jnp.array([2.0, 10.0])
    >>> u, _ = tx.update(jnp.array([1.0, 1.0]), tx.init(params), params)
    >>> [round(float(x), 4) for x in u]  # Adam says 1 each; |w| = 2 allows 0.2
    [0.2, 0.2]

  References:
    Tang et al., "Improving Training Stability for Multitask Ranking Models in
    Recommender Systems", KDD 2023 (arXiv 2302.09178).
  """
  adam = optax.scale_by_adam(b1, b2, eps)

  def init_fn(params):
    return adam.init(params)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_clippy_adam needs params: call update(grads, state, params)")
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    direction, state = adam.update(updates, state, params)
    factors = jax.tree.map(
      lambda u, w: _clip_factor(u, w, lr, lambda_rel, lambda_abs), direction, params
    )
    clipped = jax.tree.map(lambda u, r: (u * r).astype(u.dtype), direction, factors)
    return clipped, state

  return optax.GradientTransformation(init_fn, update_fn)


def clippy_adam(
  learning_rate: optax.ScalarOrSchedule,
  b1: chex.Numeric = 0.9,
  b2: chex.Numeric = 0.999,
  eps: chex.Numeric = 1e-8,
  lambda_rel: chex.Numeric = 0.5,
  lambda_abs: chex.Numeric = 1e-2,
) -> optax.GradientTransformation:
  """Clippy-Adam with a learning rate: ``chain(scale_by_clippy_adam(η, ...), scale_by_learning_rate(η))``.

  Args:
    learning_rate, b1, b2, eps, lambda_rel, lambda_abs: see :func:`scale_by_clippy_adam`.

  Returns:
    An ``optax.GradientTransformation`` (single task; for K tasks use
    ``make_method("clippy_adam", ...)`` or ``pub(scale_by_clippy_adam(η), η, ...)``).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import clippy_adam
    >>> tx = clippy_adam(0.1)
    >>> params = jnp.array([1.0, 100.0])
    >>> u, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(params), params)
    >>> [round(float(x), 4) for x in u]  # far from the bound: plain Adam
    [-0.1, 0.1]
  """
  return optax.chain(
    scale_by_clippy_adam(learning_rate, b1, b2, eps, lambda_rel, lambda_abs),
    optax.scale_by_learning_rate(learning_rate),
  )


def clip_factors(
  updates: Any,
  params: Any,
  learning_rate: chex.Numeric,
  lambda_rel: chex.Numeric = 0.5,
  lambda_abs: chex.Numeric = 1e-2,
) -> Any:
  """Clippy's per-tensor factors ``r`` for a given direction (a pytree of scalars), for logging and tests.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import clip_factors
    >>> r = clip_factors({"w": jnp.array([1.0, -4.0])}, {"w": jnp.array([1.0, 2.0])}, 1.0, 0.5, 0.0)
    >>> float(r["w"])  # |w|/2 = 1 allows a quarter of the step 4
    0.25
  """
  return jax.tree.map(
    lambda u, w: _clip_factor(u, w, learning_rate, lambda_rel, lambda_abs), updates, params
  )
