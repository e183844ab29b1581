"""IMTL-L: the loss-balance half of Impartial Multi-Task Learning, learned scales ``e^{s_k}``.

A loss-kind weighting that needs the task losses: the scales ``s`` live in its state and
take their own Adam step inside ``weigh``, so the method stays one jittable transformation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax._losses import _losses
from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


class IMTLLState(NamedTuple):
  """State of :func:`imtl_l`: the log-scales ``s`` and their optimizer's state."""

  log_scales: Array
  opt: optax.OptState


def _check(learning_rate, init: float, b1: float, b2: float, eps: float) -> None:
  if isinstance(learning_rate, int | float) and not learning_rate > 0.0:  # arrays: injected
    raise ValueError(f"imtl_l learning_rate must be positive, got {learning_rate}")
  if not math.isfinite(init):
    raise ValueError(f"imtl_l init must be finite, got {init}")
  for name, value in (("b1", b1), ("b2", b2)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f"imtl_l {name} must lie in [0, 1), got {value}")
  if not eps >= 0.0:
    raise ValueError(f"imtl_l eps must be non-negative, got {eps}")


def imtl_l(
  learning_rate: optax.ScalarOrSchedule = 1e-3,
  *,
  init: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> Weighting:
  r"""IMTL-L: weights ``w_k = e^{s_k}``, with ``s`` learned on ``Σ_k e^{s_k} L_k − s_k``.

  Liu et al. scale each task loss by a learned ``e^{s_k}`` and add ``−s_k`` so that the
  scales cannot collapse to 0, minimising ``Σ_k e^{s_k} L_k − s_k`` jointly over the model
  and ``s``. Its gradient in θ is ``Σ_k e^{s_k} ∇L_k`` (weights ``e^{s_k}``); its gradient
  in ``s`` is ``e^{s_k} L_k − 1``, zero at ``s_k = −log L_k``: for fixed positive losses the
  weights move to ``1/L_k`` and every scaled loss to 1 (the "impartial" losses).

  The weights applied at a step use the current ``s``; then ``s`` takes one Adam step (its
  own Adam state, ``learning_rate``) on ``e^{s} ∘ L − 1``. This is the uncertainty
  weighting's rule with ``s`` negated (and without its factor ½ in LibMTL's form).
  Non-positive losses have no finite optimum (``s → −∞``, weights → 0): use it with
  positive losses.

  Args:
    learning_rate: learning rate (or schedule) of the log-scales' Adam (pass the model's
      to mimic joint training).
    init: initial log-scale ``s_k`` (the paper and LibMTL: 0, weights 1).
    b1, b2, eps: Adam's hyper-parameters for ``s``.

  Raises:
    ValueError: for a non-positive learning rate, a non-finite ``init``, ``b1`` or ``b2``
      outside ``[0, 1)`` or a negative ``eps``.

  Returns:
    A loss-kind Weighting named ``"imtl_l"`` (``needs_losses=True``); state
    :class:`IMTLLState`; residual ``max_k |e^{s_k} L_k − 1|`` (0 at the optimum).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from pub_optax.weightings import imtl_l
    >>> w = imtl_l(learning_rate=0.05)
    >>> state, weigh = w.init(2, jnp.float32), jax.jit(w.weigh)
    >>> for _ in range(500):
    ...   res = weigh(jnp.array([4.0, 0.5]), state)
    ...   state = res.state
    >>> [round(float(x), 2) for x in res.weights]  # -> 1 / L
    [0.25, 2.0]

  References:
    Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task
    Learning", ICLR 2021.
  """
  _check(learning_rate, init, b1, b2, eps)
  opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

  def init_fn(num_tasks, dtype):
    s = jnp.full((num_tasks,), init, jnp.promote_types(dtype, jnp.float32))
    return IMTLLState(s, opt.init(s))

  def weigh(task_losses, state):
    s = state.log_scales
    losses = _losses(task_losses, "imtl_l", s.shape[0], s.dtype)
    weights = jnp.exp(s)
    grad = weights * losses - 1.0
    step, opt_state = opt.update(grad, state.opt, s)
    new_s = optax.apply_updates(s, step)
    return WeightingResult(weights, IMTLLState(new_s, opt_state), jnp.max(jnp.abs(grad)))

  return Weighting(init=init_fn, weigh=weigh, name="imtl_l", kind="loss", needs_losses=True)
