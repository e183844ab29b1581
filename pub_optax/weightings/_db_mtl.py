"""DB-MTL: balance loss scales with a log transform and gradient magnitudes to the largest one.

Dual-Balancing Multi-Task Learning (Lin et al. 2023) balances two things:

* **loss scale**: every task is trained on ``log L_k``, whose gradient is
  ``g_k / L_k`` (with ``L_k + ε`` for ``ε = 1e-8``, as LibMTL);
* **gradient magnitude**: each task's log-gradient is rescaled so that its
  magnitude (tracked by an exponential moving average) equals the largest one.

With ``n_k = ‖g_k‖ / (L_k + ε)`` the norm of the current log-gradient (from the
Gram diagonal), the state keeps ``m_k ← b_t m_k + (1 − b_t) n_k`` with
``b_t = β / t^σ`` (``m = 0`` before the first step, ``t`` counting from 1), and the
task weights on the raw task vectors are

  w_k = (max_j m_j / m_k) / (L_k + ε).

Difference from LibMTL, which this follows otherwise (``DB_beta = 0.9``,
``DB_beta_sigma = 0``): LibMTL keeps the moving average of the log-gradient
*vectors* and returns ``Σ_k (max_j ‖ḡ_j‖/‖ḡ_k‖) ḡ_k`` with ``ḡ`` the averaged vectors.
A Gram weighting only weighs the current vectors, so here the moving average is
of their norms and the weights apply to the current gradients (the inner
optimizer adds its own momentum); with β = 0 both are identical. A task whose
``m_k`` is zero gets ``max_j m_j / m_k`` replaced by 1 (its vector is zero). The
weights are invariant to scaling G (for a state built from equally scaled G).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult, check_gram, solve_dtype
from pub_optax.weightings._linalg import finite_gram

Array = jax.Array


class DBMTLState(NamedTuple):
  """State of :func:`db_mtl`: the moving average ``m`` of the log-gradient norms, and the step t."""

  norm_ema: Array
  step: Array


def db_mtl_weights(gram: Array, task_losses: Array, norm_ema: Array, eps: float = 1e-8) -> Array:
  r"""DB-MTL weights ``(max_j m_j / m_k) / (L_k + ε)`` for given averaged norms ``m``.

  Args:
    gram: ``(K, K)`` Gram matrix of the task gradients (only its shape is read; the
      norms enter through ``norm_ema``).
    task_losses: ``(K,)`` positive task losses.
    norm_ema: ``(K,)`` averaged log-gradient norms ``m``.
    eps: the ``ε`` of ``log(L + ε)``.

  Returns:
    ``(K,)`` weights.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import db_mtl_weights
    >>> w = db_mtl_weights(jnp.eye(2), jnp.array([2.0, 0.5]), jnp.array([1.0, 4.0]), eps=0.0)
    >>> w.tolist()  # (4/1)/2 and (4/4)/0.5
    [2.0, 2.0]
  """
  check_gram(gram)
  dtype = solve_dtype(gram)
  m = jnp.asarray(norm_ema, dtype)
  top = jnp.max(m)
  live = m > jnp.finfo(dtype).eps * top
  ratio = jnp.where(live, top / jnp.where(live, m, 1.0), 1.0)
  return ratio / (jnp.asarray(task_losses, dtype) + eps)


def db_mtl(beta: float = 0.9, beta_sigma: float = 0.0, *, eps: float = 1e-8) -> Weighting:
  r"""DB-MTL as a :class:`~pub_optax.weightings.Weighting` named ``"db_mtl"`` (needs the losses).

  Args:
    beta: β of the moving average of the log-gradient norms (LibMTL's ``DB_beta``).
    beta_sigma: σ, the decay ``b_t = β / t^σ`` of the averaging factor
      (LibMTL's ``DB_beta_sigma``).
    eps: ``ε`` in ``log(L + ε)``; the losses must be non-negative.

  Returns:
    A Weighting with ``needs_losses=True`` and state :class:`DBMTLState`. Residual 0
    (inf, with NaN weights and an unchanged state, for a non-finite G or losses).

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import db_mtl
    >>> w = db_mtl(beta=0.0)
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # norms 2 and 1
    >>> res = w.weigh(gram, w.init(2, jnp.float32), jnp.array([2.0, 0.25]))
    >>> [round(float(x), 3) for x in res.weights]  # log-gradient norms 1 and 4: (4/1)/2, (4/4)/0.25
    [2.0, 4.0]

  References:
    Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task Learning",
    arXiv 2308.12029, 2023 (LibMTL's ``DB_MTL``).
  """
  beta, beta_sigma = float(beta), float(beta_sigma)
  if not 0.0 <= beta < 1.0:
    raise ValueError(f"beta must be in [0, 1), got {beta}")
  if beta_sigma < 0.0:
    raise ValueError(f"beta_sigma must be non-negative, got {beta_sigma}")

  def init(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    return DBMTLState(jnp.zeros((num_tasks,), dt), jnp.zeros((), jnp.int32))

  def weigh(gram, state, task_losses=None):
    check_gram(gram)
    m = state.norm_ema
    losses = _losses(task_losses, "db_mtl", m.shape[0], m.dtype)
    ok, safe = finite_gram(jnp.asarray(gram, m.dtype))
    ok = ok & jnp.all(jnp.isfinite(losses))
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(safe), 0.0)) / (losses + eps)
    step = state.step + 1
    rate = beta / step.astype(m.dtype) ** beta_sigma
    new_m = rate * m + (1.0 - rate) * norms
    weights = db_mtl_weights(safe, losses, new_m, eps)
    new_state = DBMTLState(jnp.where(ok, new_m, m), jnp.where(ok, step, state.step))
    weights = jnp.where(ok, weights, jnp.nan).astype(m.dtype)
    return WeightingResult(weights, new_state, jnp.where(ok, 0.0, jnp.inf).astype(m.dtype))

  return Weighting(init=init, weigh=weigh, name="db_mtl", needs_losses=True)
