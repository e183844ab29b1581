"""IMTL (hybrid): learned loss scales (IMTL-L) with impartial gradient weights (IMTL-G) on top.

Impartial Multi-Task Learning (Liu et al. 2021) combines two balancing steps:

* **IMTL-L** scales each loss by a learned ``e^{s_k}`` and trains ``s`` on
  ``e^{s_k} L_k − s_k``, whose gradient in s is ``e^{s_k} L_k − 1``: for fixed
  positive losses ``s_k → −log L_k`` and every scaled loss tends to 1.
* **IMTL-G** then weighs the gradients of the scaled losses, ``e^{s_k} g_k``, so
  that the joint direction has equal projections onto every task direction
  (:func:`~pub_optax.weightings.imtl_g_weights` on the Gram matrix
  ``E G E``, ``E = diag(e^s)``), weights α summing to 1.

On the raw task vectors the weights are ``w_k = α_k e^{s_k}``. As in
:func:`~pub_optax.uncertainty`, the weights applied at a step use the current
``s``; then ``s`` takes one Adam step (its own state) on the gradient
``e^s ∘ L − 1``. The paper trains s with the network's optimizer; pass the
model's learning rate to mimic it. Losses must be positive for ``s`` to have a
finite optimum. The weights are invariant to scaling G.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult, check_gram
from pub_optax.weightings._imtl import imtl_g_residual, imtl_g_weights
from pub_optax.weightings._linalg import finite_gram

Array = jax.Array


class IMTLState(NamedTuple):
  """State of :func:`imtl`: the log loss scales ``s`` and their Adam state."""

  log_scales: Array
  opt: optax.OptState


def imtl_weights(gram: Array, log_scales: Array) -> Array:
  r"""Hybrid IMTL weights ``w = α ∘ e^s`` with ``α`` IMTL-G's weights for the scaled Gram ``E G E``.

  Args:
    gram: ``(K, K)`` Gram matrix of the raw task vectors, any scale.
    log_scales: ``(K,)`` log loss scales ``s``.

  Returns:
    ``(K,)`` weights on the raw task vectors (``Σ_k w_k e^{−s_k} = 1``). NaN when G has
    a non-finite entry.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import imtl_weights
    >>> gram = jnp.array([[4.0, 0.0], [0.0, 1.0]])  # orthogonal, norms 2 and 1
    >>> s = jnp.log(jnp.array([1.0, 2.0]))  # scaled norms 2 and 2: alpha = 1/2 each
    >>> [round(float(x), 4) for x in imtl_weights(gram, s)]
    [0.5, 1.0]

  References:
    Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.
  """
  check_gram(gram)
  scales = jnp.exp(jnp.asarray(log_scales))
  if scales.shape != (gram.shape[0],):
    raise ValueError(f"log_scales must have shape ({gram.shape[0]},), got {scales.shape}")
  alpha = imtl_g_weights(scales[:, None] * gram * scales[None, :])
  return alpha * scales.astype(alpha.dtype)


def imtl(
  learning_rate: optax.ScalarOrSchedule = 1e-3,
  *,
  init: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> Weighting:
  r"""Hybrid IMTL (IMTL-L scales, IMTL-G weights) as a Weighting named ``"imtl"`` (needs the losses).

  Args:
    learning_rate: learning rate (or schedule) of the log scales' Adam.
    init: initial log scale ``s_k`` (scales ``e^init``).
    b1, b2, eps: Adam's hyper-parameters for ``s``.

  Returns:
    A :class:`~pub_optax.weightings.Weighting` with ``needs_losses=True`` and state
    :class:`IMTLState`; its residual is IMTL-G's spread of projections on the
    scaled Gram matrix (inf, with NaN weights and an unchanged state, for a
    non-finite G or losses).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import imtl
    >>> w = imtl(learning_rate=0.05)
    >>> state, weigh = w.init(2, jnp.float32), jax.jit(w.weigh)
    >>> gram = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> for _ in range(500):
    ...   res = weigh(gram, state, jnp.array([4.0, 0.5]))
    ...   state = res.state
    >>> [round(float(x), 2) for x in jnp.exp(state.log_scales)]  # -> 1 / L
    [0.25, 2.0]

  References:
    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
    Learning", ICLR 2021.
  """
  opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

  def init_fn(num_tasks, dtype):
    s = jnp.full((num_tasks,), init, jnp.promote_types(dtype, jnp.float32))
    return IMTLState(s, opt.init(s))

  def weigh(gram, state, task_losses=None):
    check_gram(gram)
    s = state.log_scales
    losses = _losses(task_losses, "imtl", s.shape[0], s.dtype)
    ok, safe = finite_gram(jnp.asarray(gram, s.dtype))
    ok = ok & jnp.all(jnp.isfinite(losses))
    weights = imtl_weights(safe, s).astype(s.dtype)
    scales = jnp.exp(s)
    residual = imtl_g_residual(scales[:, None] * safe * scales[None, :], weights / scales)
    grad = jnp.where(ok, scales * losses - 1.0, 0.0)
    step, opt_state = opt.update(grad, state.opt, s)
    new_state = IMTLState(optax.apply_updates(s, step), opt_state)
    new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    weights = jnp.where(ok, weights, jnp.nan)
    return WeightingResult(weights, new_state, jnp.where(ok, residual, jnp.inf).astype(s.dtype))

  return Weighting(init=init_fn, weigh=weigh, name="imtl", needs_losses=True)
