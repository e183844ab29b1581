"""Fixed and random weightings: equal (1/K), ones (the plain sum) and RLW (random loss weighting).

None of them looks at the Gram matrix (``needs_gram=False``, so
:func:`pub_optax.balance` does not build it):

* ``equal()``: ``w_k = 1/K``, the gradient of the mean task loss.
* ``ones()``: ``w_k = 1``, the gradient of the summed loss; AdaTask sums its
  per-task Adam updates with it.
* ``rlw(seed)``: ``w = softmax(ξ)``, ``ξ ~ N(0, I)`` drawn afresh at every step
  from a PRNG key kept in the state (Lin et al.).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


def _constant(name: str, value_fn) -> Weighting:
  def init(num_tasks, dtype):
    del num_tasks, dtype
    return ()

  def weigh(gram, state, task_losses=None):
    del task_losses
    k = gram.shape[0]
    dtype = jnp.promote_types(gram.dtype, jnp.float32)
    return WeightingResult(jnp.full((k,), value_fn(k), dtype), state, jnp.zeros((), dtype))

  return Weighting(init=init, weigh=weigh, name=name, needs_gram=False)


def equal() -> Weighting:
  """Equal weights ``1/K`` (the mean of the task losses).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import equal
    >>> w = equal()
    >>> w.weigh(jnp.zeros((4, 4)), w.init(4, jnp.float32), None).weights.tolist()
    [0.25, 0.25, 0.25, 0.25]
  """
  return _constant("equal", lambda k: 1.0 / k)


def ones() -> Weighting:
  """All-ones weights (the sum of the task losses; AdaTask's combination).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import ones
    >>> w = ones()
    >>> w.weigh(jnp.zeros((3, 3)), w.init(3, jnp.float32), None).weights.tolist()
    [1.0, 1.0, 1.0]
  """
  return _constant("sum", lambda k: 1.0)


def rlw(seed: int = 0) -> Weighting:
  r"""Random loss weighting: ``w = softmax(ξ)`` with ``ξ ~ N(0, I_K)`` at every step.

  Args:
    seed: seed of the PRNG key kept in the state (split at every call).

  Returns:
    A Weighting named ``"rlw"`` whose state is a ``uint32`` PRNG key.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import rlw
    >>> w = rlw(seed=0)
    >>> res = w.weigh(jnp.zeros((3, 3)), w.init(3, jnp.float32), None)
    >>> round(float(res.weights.sum()), 6), bool((res.weights > 0).all())
    (1.0, True)

  References:
    Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning", TMLR 2022.
  """

  def init(num_tasks, dtype):
    del num_tasks, dtype
    return jax.random.PRNGKey(seed)

  def weigh(gram, state, task_losses=None):
    del task_losses
    k = gram.shape[0]
    dtype = jnp.promote_types(gram.dtype, jnp.float32)
    key, sub = jax.random.split(state)
    weights = jax.nn.softmax(jax.random.normal(sub, (k,), dtype))
    return WeightingResult(weights, key, jnp.zeros((), dtype))

  return Weighting(init=init, weigh=weigh, name="rlw", needs_gram=False)
