"""Loss-level weightings that need the task losses: uncertainty weighting and FAMO.

Both are :class:`~pub_optax.weightings.Weighting` objects with
``kind="loss", needs_losses=True``: :func:`pub_optax.balance` skips the Gram
matrix and requires ``update(..., task_losses=losses)``, where ``losses`` is the
``(K,)`` vector of the current task losses (e.g. from
:func:`pub_optax.value_and_task_grads`). Their learnable parameters live in the
weighting's state and take their own small optimizer step inside ``weigh``, so
the whole method stays one jittable optax transformation.

* :func:`uncertainty` (Kendall, Gal & Cipolla 2018): weights ``exp(−s_k)`` with
  log-variances ``s`` trained on ``Σ_k exp(−s_k) L_k + s_k``.
* :func:`famo` (Liu, Liu, Stone & Liu 2023): weights from logits ξ, updated from
  the decrease of the log-losses between consecutive steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pub_optax.weightings._base import Weighting, WeightingResult

Array = jax.Array


def _losses(task_losses, name: str, k: int, dtype) -> Array:
  if task_losses is None:
    raise ValueError(
      f"the {name!r} weighting needs the task losses: call update(..., task_losses=losses)"
    )
  losses = jnp.asarray(task_losses, dtype)
  if losses.shape != (k,):
    raise ValueError(f"task_losses must have shape ({k},), got {losses.shape}")
  return jax.lax.stop_gradient(losses)


class UncertaintyState(NamedTuple):
  """State of :func:`uncertainty`: log-variances ``s`` and their optimizer's state."""

  log_vars: Array
  opt: optax.OptState


def uncertainty(
  learning_rate: optax.ScalarOrSchedule = 1e-3,
  *,
  init: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> Weighting:
  r"""Uncertainty weighting: ``w_k = exp(−s_k)``, with ``s`` learned on ``Σ_k exp(−s_k)L_k + s_k``.

  Kendall et al. weigh each task loss by a learned homoscedastic uncertainty,
  minimising ``Σ_k exp(−s_k) L_k + s_k`` jointly over the model and the
  log-variances ``s_k``. Its gradient in θ is ``Σ_k exp(−s_k) ∇L_k``, so the task
  weights are ``exp(−s_k)``; its gradient in s is ``1 − exp(−s_k) L_k``, whose
  zero is ``s_k = log L_k``: for fixed positive losses the weights move to
  ``1/L_k``.

  Choice made here: the weights applied at a step use the current ``s``; then
  ``s`` takes one Adam step (its own Adam state, ``learning_rate`` — pass the
  model's to mimic joint training) on the gradient ``1 − exp(−s) ∘ L``. (This is
  the ``exp(−s)`` form; LibMTL's ``L/(2eˢ) + s/2`` has the same optimum with
  weights halved.) Negative losses have no finite optimum (``s → −∞``): use it
  with non-negative losses.

  Args:
    learning_rate: learning rate (or schedule) of the log-variances' Adam.
    init: initial log-variance ``s_k`` (weights ``exp(−init)``).
    b1, b2, eps: Adam's hyper-parameters for ``s``.

  Returns:
    A Weighting named ``"uncertainty"``; state :class:`UncertaintyState`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import uncertainty
    >>> import jax
    >>> w = uncertainty(learning_rate=0.05)
    >>> state, weigh = w.init(2, jnp.float32), jax.jit(w.weigh)
    >>> for _ in range(500):
    ...   res = weigh(jnp.array([4.0, 0.5]), state)
    ...   state = res.state
    >>> [round(float(x), 2) for x in res.weights]  # -> 1 / L
    [0.25, 2.0]

  References:
    Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018.
  """
  opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

  def init_fn(num_tasks, dtype):
    s = jnp.full((num_tasks,), init, jnp.promote_types(dtype, jnp.float32))
    return UncertaintyState(s, opt.init(s))

  def weigh(task_losses, state):
    s = state.log_vars
    losses = _losses(task_losses, "uncertainty", s.shape[0], s.dtype)
    weights = jnp.exp(-s)
    grad = 1.0 - weights * losses
    step, opt_state = opt.update(grad, state.opt, s)
    new_s = optax.apply_updates(s, step)
    return WeightingResult(weights, UncertaintyState(new_s, opt_state), jnp.max(jnp.abs(grad)))

  return Weighting(init=init_fn, weigh=weigh, name="uncertainty", kind="loss", needs_losses=True)


class FAMOState(NamedTuple):
  """State of :func:`famo`: logits ξ, their optimizer state, the previous losses and a started flag."""

  logits: Array
  opt: optax.OptState
  prev_losses: Array
  started: Array


def famo(
  learning_rate: optax.ScalarOrSchedule = 0.025,
  *,
  gamma: float = 0.01,
  min_losses: float | Array = 0.0,
  eps: float = 1e-8,
) -> Weighting:
  r"""FAMO: fast adaptive multitask optimisation with O(1) cost per step.

  With logits ξ (state), ``z = softmax(ξ)`` and shifted losses
  ``D_k = L_k − L_k^min + ε``, the model follows the gradient of
  ``Σ_k z_k log D_k`` normalised by ``c = Σ_k z_k/D_k``, i.e. task weights

    w_k = (z_k / D_k) / Σ_j (z_j / D_j)        (Σ w = 1).

  The logits learn from how much each log-loss actually dropped:
  ``δ_k = log D_k(before) − log D_k(after)``, gradient ``(∂z/∂ξ)ᵀ δ``, one Adam
  step with learning rate ``learning_rate`` and L2 coefficient ``gamma`` (torch
  Adam's coupled ``weight_decay``, as in the official code).

  Which losses are compared: the paper re-evaluates the losses on the same
  batch right after the model step. An optax transformation only sees the
  losses passed at each call, so here ``δ`` compares the losses of two
  consecutive calls: at step t, first ξ is updated with
  ``log D(L_{t−1}) − log D(L_t)`` (skipped at the first step), then the weights
  are computed from the updated ξ and ``L_t``. With full-batch losses (e.g. the
  toy problem) this is exactly the official toy loop; with minibatches it adds
  the batch-to-batch loss noise to δ. Losses below ``min_losses`` are clamped so
  that ``D > 0`` (``log`` of a negative number would make the state NaN).

  Args:
    learning_rate: Adam learning rate of the logits (``w_lr``, 0.025 officially).
    gamma: L2 regularisation of the logits (0.01 in ``famo.py``; the official toy
      uses 0).
    min_losses: scalar or ``(K,)`` lower bounds ``L^min`` of the losses (0 for
      non-negative losses; the toy problem uses −21).
    eps: the ``ε`` added to ``L − L^min``.

  Returns:
    A Weighting named ``"famo"``; state :class:`FAMOState`.

  Example:
    >>> import jax.numpy as jnp
    >>> from pub_optax import famo
    >>> w = famo()
    >>> state = w.init(2, jnp.float32)
    >>> res = w.weigh(jnp.array([1.0, 3.0]), state)
    >>> [round(float(x), 2) for x in res.weights]  # z = 1/2: w ∝ 1/L
    [0.75, 0.25]

  References:
    Liu, Liu, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization",
    NeurIPS 2023.
  """
  opt = optax.chain(optax.add_decayed_weights(gamma), optax.adam(learning_rate))

  def init_fn(num_tasks, dtype):
    dt = jnp.promote_types(dtype, jnp.float32)
    xi = jnp.zeros((num_tasks,), dt)
    return FAMOState(xi, opt.init(xi), jnp.zeros((num_tasks,), dt), jnp.zeros((), bool))

  def shifted_log(losses):
    lower = jnp.asarray(min_losses, losses.dtype)
    return jnp.log(jnp.maximum(losses - lower, 0.0) + eps)

  def weigh(task_losses, state):
    xi = state.logits
    losses = _losses(task_losses, "famo", xi.shape[0], xi.dtype)
    log_d = shifted_log(losses)
    delta = shifted_log(state.prev_losses) - log_d
    z = jax.nn.softmax(xi)
    grad = z * (delta - z @ delta)  # (∂softmax/∂ξ)ᵀ δ
    step, opt_state = opt.update(grad, state.opt, xi)
    new_xi = optax.apply_updates(xi, step)
    new_xi, opt_state = jax.tree.map(
      lambda new, old: jnp.where(state.started, new, old), (new_xi, opt_state), (xi, state.opt)
    )
    z = jax.nn.softmax(new_xi)
    ratio = z * jnp.exp(-log_d)
    weights = ratio / jnp.sum(ratio)
    new_state = FAMOState(new_xi, opt_state, losses, jnp.ones((), bool))
    return WeightingResult(weights, new_state, jnp.zeros((), xi.dtype))

  return Weighting(init=init_fn, weigh=weigh, name="famo", kind="loss", needs_losses=True)
