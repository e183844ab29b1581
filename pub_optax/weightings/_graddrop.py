r"""GradDrop: keep, coordinate by coordinate, only the task entries of one randomly chosen sign.

Gradient sign dropout (Chen et al., 2020) looks at every coordinate ``c`` of the shared
parameters separately. With ``g_{kc}`` task k's entry there, the *positive sign purity*

.. math::

  P_c = \tfrac12 \Big(1 + \frac{\sum_k g_{kc}}{\sum_k |g_{kc}|}\Big) \in [0, 1]

is 1 when every task pushes the coordinate up, 0 when every task pushes it down. One
uniform number ``U_c ~ U[0, 1)`` per coordinate picks a sign: where ``f(P_c) > U_c``
only the positive entries are kept, where ``f(P_c) < U_c`` only the negative ones
(``f`` monotone, the identity by default). With a per-task leak ``ℓ_k ∈ [0, 1]``, as in
TorchJD's ``GradDrop`` and LibMTL's ``leak``, task k's entry enters the output with
coefficient ``ℓ_k + (1 − ℓ_k) M_{kc}``:

.. math::

  u_c = \sum_k \big(\ell_k + (1 - \ell_k) M_{kc}\big)\, g_{kc},\qquad
  M_{kc} = [f(P_c) > U_c][g_{kc} > 0] + [f(P_c) < U_c][g_{kc} < 0].

Where all tasks agree in sign (``P_c ∈ {0, 1}``) nothing is dropped; where they
conflict, the sign of the output follows the majority (in mass) with probability
``f(P_c)``. A coordinate where every entry is zero has ``P_c = ½`` (its output is 0).

This is the parameter-gradient form (Algorithm 1, lines 10-15 of the paper, as TorchJD
applies it). The paper and LibMTL apply it to the gradients at one activation layer,
each multiplied by the sign of that layer's input and summed over the batch; a
parameter gradient is one such sum already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax._gram import task_sum
from pub_optax.weightings._base import CoordinateResult, Weighting, coordinatewise

Array = jax.Array


class GradDropState(NamedTuple):
  """State of :func:`graddrop`: the PRNG key (split at every call)."""

  key: Array


def _leak_vector(leak, k: int):
  values = [float(x) for x in (leak if isinstance(leak, Sequence) else [leak] * k)]
  if len(values) != k:
    raise ValueError(f"graddrop: leak has {len(values)} values for K = {k} tasks")
  if not all(0.0 <= x <= 1.0 for x in values):
    raise ValueError(f"graddrop: every leak must be in [0, 1], got {values}")
  return values


def graddrop_leaf(
  stacked: Array, uniform: Array, leak: Array, purity_fn: Callable[[Array], Array] | None = None
) -> tuple[Array, Array]:
  r"""GradDrop on one ``(K, ...)`` leaf with given uniform draws.

  Args:
    stacked: ``(K, ...)`` task entries.
    uniform: ``stacked.shape[1:]`` draws ``U_c`` in [0, 1).
    leak: ``(K,)`` leak per task.
    purity_fn: the monotone ``f`` applied to the sign purity (identity if ``None``).

  Returns:
    ``(output, coefficients)``: the combined leaf (in ``stacked``'s dtype) and the
    ``(K, ...)`` coefficients ``ℓ_k + (1 − ℓ_k) M_{kc}`` of every task entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import graddrop_leaf
    >>> g = jnp.array([[1.0, 2.0, 3.0], [-3.0, 2.0, -1.0]])  # P = (1/4, 1, 3/4)
    >>> out, coeff = graddrop_leaf(g, jnp.array([0.5, 0.5, 0.5]), jnp.zeros(2))
    >>> out.tolist(), coeff.tolist()
    ([-3.0, 4.0, 3.0], [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  """
  acc = jnp.promote_types(stacked.dtype, jnp.float32)
  x = stacked.astype(acc)
  total, mass = task_sum(x), task_sum(jnp.abs(x))
  purity = jnp.where(mass > 0, 0.5 * (1.0 + total / jnp.where(mass > 0, mass, 1.0)), 0.5)
  fp = purity if purity_fn is None else purity_fn(purity)
  u = uniform.astype(acc)
  kept = ((fp > u)[None] & (x > 0)) | ((fp < u)[None] & (x < 0))
  lk = jnp.asarray(leak, acc).reshape((-1,) + (1,) * (x.ndim - 1))
  coeff = lk + (1.0 - lk) * kept.astype(acc)
  return task_sum(coeff * x).astype(stacked.dtype), coeff


def graddrop(
  leak: float | Sequence[float] = 0.0,
  seed: int = 0,
  *,
  purity_fn: Callable[[Array], Array] | None = None,
) -> Weighting:
  r"""GradDrop as a coordinate-kind :class:`~pub_optax.weightings.Weighting` named ``"graddrop"``.

  At every call the state's key is split; the uniform draws of the i-th shared leaf
  are ``jax.random.uniform(jax.random.fold_in(sub, i), leaf_shape)`` (in the leaf's
  dtype promoted to float32), ``sub`` the second half of the split.

  Args:
    leak: ``ℓ``, one value in [0, 1] for every task or a sequence of K values
      (0, no leak, is the paper's, LibMTL's and TorchJD's default; 1 gives the sum).
    seed: seed of the PRNG key kept in the state.
    purity_fn: the monotone ``f`` applied to the sign purity (identity if ``None``).

  Returns:
    A coordinate-kind Weighting with state :class:`GradDropState`. Its ``weights``
    are, per task, the mean over the shared coordinates of the coefficient
    ``ℓ_k + (1 − ℓ_k) M_{kc}`` of its entries: without leak, the share of shared
    coordinates at which the task's entry was kept (a zero entry counts as
    dropped). They describe the step; the direction is not ``Σ_k w_k g_k``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import graddrop
    >>> w = graddrop(seed=0)
    >>> vectors = (jnp.array([[1.0, 2.0], [3.0, 1.0]]),)  # no conflict: nothing dropped
    >>> res = w.weigh(vectors, w.init(2, jnp.float32, ()), None)
    >>> res.direction[0].tolist(), res.weights.tolist()
    ([4.0, 3.0], [1.0, 1.0])

  References:
    Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign:
    Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020.
  """
  if isinstance(leak, Sequence):
    _leak_vector(leak, len(leak))
  else:
    _leak_vector(leak, 1)

  def init(num_tasks, dtype, shared):
    del dtype, shared
    _leak_vector(leak, num_tasks)
    return GradDropState(jax.random.PRNGKey(seed))

  def rule(vectors, state, task_losses=None):
    del task_losses
    k = vectors[0].shape[0]
    dtype = jnp.promote_types(vectors[0].dtype, jnp.float32)
    leaks = jnp.asarray(_leak_vector(leak, k), dtype)
    key, sub = jax.random.split(state.key)
    outputs, totals, count = [], jnp.zeros((k,), dtype), 0
    for i, v in enumerate(vectors):
      acc = jnp.promote_types(v.dtype, jnp.float32)
      u = jax.random.uniform(jax.random.fold_in(sub, i), v.shape[1:], acc)
      out, coeff = graddrop_leaf(v, u, leaks, purity_fn)
      outputs.append(out)
      totals = totals + jnp.sum(coeff.reshape(k, -1), 1).astype(dtype)
      count += v[0].size
    weights = totals / max(count, 1)
    return CoordinateResult(tuple(outputs), weights, GradDropState(key), jnp.zeros((), dtype))

  return coordinatewise("graddrop", init, rule)
