"""Fixed and random weightings: equal (1/K), ones (the plain sum) and RLW (random loss weighting).

None of them looks at the task vectors: they are ``kind="loss"`` weightings that read only
their state, so :func:`pub_optax.balance` builds no Gram matrix for them.

* ``equal()``: ``w_k = 1/K``, the gradient of the mean task loss.
* ``ones()``: ``w_k = 1``, the gradient of the summed loss; AdaTask sums its
  per-task Adam updates with it.
* ``rlw(seed)``: ``w = softmax(ξ)``, ``ξ ~ N(0, I)`` drawn afresh at every step
  from a PRNG key kept in the state (Lin et al.).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


def _constant(name: str, value_fn) -> Weighting:
  """Weights ``value_fn(K)`` for every task, held as the state."""

  def init(num_tasks, dtype):
    dtype = jnp.promote_types(dtype, jnp.float32)
    return jnp.full((num_tasks,), value_fn(num_tasks), dtype)

  def weigh(task_losses, state):
    del task_losses
    return WeightingResult(state, state, jnp.zeros((), state.dtype))

  return Weighting(init=init, weigh=weigh, name=name, kind="loss")


def equal() -> Weighting:
  """Equal weights ``1/K`` (the mean of the task losses).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import equal
    >>> w = equal()
    >>> w.weigh(None, w.init(4, jnp.float32)).weights.tolist()
    [0.25, 0.25, 0.25, 0.25]
  """
  return _constant("equal", lambda k: 1.0 / k)


def ones() -> Weighting:
  """All-ones weights (the sum of the task losses; AdaTask's combination).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import ones
    >>> w = ones()
    >>> w.weigh(None, w.init(3, jnp.float32)).weights.tolist()
    [1.0, 1.0, 1.0]
  """
  return _constant("sum", lambda k: 1.0)


class RLWState(NamedTuple):
  """State of :func:`rlw`: the PRNG key and the weights drawn last."""

  key: Array
  weights: Array


def rlw(seed: int = 0) -> Weighting:
  r"""Random loss weighting: ``w = softmax(ξ)`` with ``ξ ~ N(0, I_K)`` at every step.

  Args:
    seed: seed of the PRNG key kept in the state (split at every call).

  Returns:
    A loss-kind Weighting named ``"rlw"`` whose state is an :class:`RLWState`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import rlw
    >>> w = rlw(seed=0)
    >>> res = w.weigh(None, w.init(3, jnp.float32))
    >>> round(float(res.weights.sum()), 6), bool((res.weights > 0).all())
    (1.0, True)

  References:
    Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning", TMLR 2022.
  """

  def init(num_tasks, dtype):
    dtype = jnp.promote_types(dtype, jnp.float32)
    return RLWState(jax.random.PRNGKey(seed), jnp.full((num_tasks,), 1.0 / num_tasks, dtype))

  def weigh(task_losses, state):
    del task_losses
    key, sub = jax.random.split(state.key)
    weights = jax.nn.softmax(jax.random.normal(sub, state.weights.shape, state.weights.dtype))
    return WeightingResult(weights, RLWState(key, weights), jnp.zeros((), weights.dtype))

  return Weighting(init=init, weigh=weigh, name="rlw", kind="loss")
