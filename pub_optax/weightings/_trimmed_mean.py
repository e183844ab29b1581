r"""Trimmed mean: per coordinate, drop the ``t`` largest and ``t`` smallest task entries, average the rest.

The coordinate-wise trimmed mean of Yin et al. (2018), a Byzantine-robust aggregator
that TorchJD offers as ``TrimmedMean``. With ``g_{(1)c} ≤ … ≤ g_{(K)c}`` the K task
entries at coordinate ``c`` in increasing order,

.. math::

  u_c = \frac{1}{K - 2t} \sum_{i = t + 1}^{K - t} g_{(i)c},

so one task whose entries are arbitrarily large or small moves no coordinate of the
output outside the range of the other tasks' entries as long as ``t ≥ 1``. It needs
``K > 2t``; ``t = 0`` is the plain mean, and ``K = 2t + 1`` the coordinate-wise median.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from pub_optax.weightings._base import CoordinateResult, Weighting, coordinatewise

Array = jax.Array


def _check_tasks(trim_number: int, k: int) -> None:
  if k <= 2 * trim_number:
    raise ValueError(
      f"trimmed_mean with trim_number={trim_number} drops {2 * trim_number} of the K task "
      f"entries at every coordinate, so it needs K > {2 * trim_number} tasks, got K = {k}"
    )


def trimmed_mean_leaf(stacked: Array, trim_number: int) -> tuple[Array, Array]:
  """The trimmed mean of one ``(K, ...)`` leaf over its task axis.

  Args:
    stacked: ``(K, ...)`` task entries.
    trim_number: ``t``, entries dropped at each end (``K > 2t``), static.

  Returns:
    ``(output, kept)``: the trimmed mean (in ``stacked``'s dtype) and the ``(K, ...)``
    bool mask of the entries it averaged (ties broken by task order).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import trimmed_mean_leaf
    >>> g = jnp.array([[1.0, 1e6], [2.0, 0.0], [3.0, 1.0], [-1e6, 2.0]])
    >>> out, kept = trimmed_mean_leaf(g, 1)
    >>> out.tolist(), kept[:, 0].tolist()
    ([1.5, 1.5], [True, True, False, False])
  """
  k = stacked.shape[0]
  _check_tasks(trim_number, k)
  acc = jnp.promote_types(stacked.dtype, jnp.float32)
  x = stacked.astype(acc)
  ordered = jnp.sort(x, axis=0)
  output = jnp.mean(ordered[trim_number : k - trim_number], axis=0)
  ranks = jnp.argsort(jnp.argsort(x, axis=0, stable=True), axis=0, stable=True)
  kept = (ranks >= trim_number) & (ranks < k - trim_number)
  return output.astype(stacked.dtype), kept


def trimmed_mean(trim_number: int = 1) -> Weighting:
  r"""The coordinate-wise trimmed mean as a coordinate-kind weighting named ``"trimmed_mean"``.

  Args:
    trim_number: ``t ≥ 0``, how many of the largest and of the smallest task entries
      each coordinate drops (TorchJD's ``trim_number``; it has no default there, 1
      here: the median of three tasks, a robust mean of more). The task vectors
      must number ``K > 2t``; fewer raise a ValueError when the state is
      initialised and when the step is traced.

  Returns:
    A stateless coordinate-kind Weighting. Its ``weights`` are, per task, the mean
    over the shared coordinates of the coefficient of its entries, ``1/(K − 2t)``
    where the entry was averaged and 0 where it was trimmed: they sum to 1, and
    equal ``1/K`` for ``t = 0``. They describe the step; the direction is not
    ``Σ_k w_k g_k``.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import trimmed_mean
    >>> w = trimmed_mean(1)
    >>> vectors = (jnp.array([[1.0, 4.0], [2.0, 5.0], [100.0, -100.0]]),)
    >>> res = w.weigh(vectors, w.init(3, jnp.float32, ()), None)
    >>> res.direction[0].tolist(), res.weights.tolist()  # the median of 3 at every coordinate
    ([2.0, 4.0], [0.5, 0.5, 0.0])

  References:
    Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning:
    Towards Optimal Statistical Rates", ICML 2018.
  """
  try:
    trim_number = operator.index(trim_number)
  except TypeError:
    raise ValueError(f"trim_number must be a non-negative integer, got {trim_number!r}") from None
  if trim_number < 0:
    raise ValueError(f"trim_number must be a non-negative integer, got {trim_number}")

  def init(num_tasks, dtype, shared):
    del dtype, shared
    _check_tasks(trim_number, num_tasks)
    return ()

  def rule(vectors, state, task_losses=None):
    del task_losses
    k = vectors[0].shape[0]
    _check_tasks(trim_number, k)
    dtype = jnp.promote_types(vectors[0].dtype, jnp.float32)
    outputs, counts, size = [], jnp.zeros((k,), dtype), 0
    for v in vectors:
      out, kept = trimmed_mean_leaf(v, trim_number)
      outputs.append(out)
      counts = counts + jnp.sum(kept.reshape(k, -1), 1).astype(dtype)
      size += v[0].size
    weights = counts / (max(size, 1) * (k - 2 * trim_number))
    return CoordinateResult(tuple(outputs), weights, state, jnp.zeros((), dtype))

  return coordinatewise("trimmed_mean", init, rule)
